"""The Gradio app, served for real and driven through gradio_client as a script would."""

import socket

import pytest
from photo_factory import make_photo

from petdream.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(tiny, data_dir):
    from petdream.ui import build_app

    settings = Settings.from_env({}, data_dir=data_dir, profile="tiny", device="cpu")
    app = build_app(settings)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


def test_page_is_served_with_the_tiny_banner(served_app):
    import httpx

    page = httpx.get(served_app, timeout=30)
    assert page.status_code == 200 and "PetDream" in page.text
    config = httpx.get(served_app + "config", timeout=30).json()
    assert config["title"] == "PetDream" and config["analytics_enabled"] is False
    texts = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
    assert "random weights" in texts and "profile **tiny**" in texts


def test_check_photos_endpoint_reports_accepted_and_rejected(served_app, tmp_path):
    from gradio_client import Client, handle_file

    files = []
    for i in range(2):
        make_photo(i).save(tmp_path / f"dog{i}.jpg")
        files.append(tmp_path / f"dog{i}.jpg")
    (tmp_path / "readme.png").write_text("hello")
    files.append(tmp_path / "readme.png")
    summary, gallery, table = Client(served_app, verbose=False).predict(
        [handle_file(str(f)) for f in files], api_name="/check_photos"
    )
    assert summary == "**2 usable photos: add 1 more to train.**"
    assert len(gallery) == 2
    assert table["data"][0][0] == "readme.png" and "not a photo" in table["data"][0][1]


def test_generate_endpoint_draws_and_reports_errors(served_app):
    from gradio_client import Client

    client = Client(served_app, verbose=False)
    gallery, notes = client.predict("a photo of a dog", "", 3, 7.5, "dpmpp", 5, 2, api_name="/generate")
    assert len(gallery) == 2 and notes.startswith("Seed 5.")
    with pytest.raises(Exception, match="The prompt is empty"):
        client.predict("", "", 3, 7.5, "dpmpp", 5, 1, api_name="/generate")

"""The Gradio app, served for real and driven through gradio_client as a script would."""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image
from pet_factory import add_trained_pet
from photo_factory import make_photo

from conftest import REPO
from petdream.settings import Settings

ALICE, BOB = "a" * 40, "b" * 40  # the keys two scripts (or browsers) call themselves by
STEPS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(tiny, data_dir):
    from petdream.ui import LAUNCH_OPTIONS, build_app

    settings = Settings.from_env({}, data_dir=data_dir, profile="tiny", device="cpu")
    app = build_app(settings)
    port = free_port()
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                       **LAUNCH_OPTIONS)  # as app.py launches it
    app.url = f"http://127.0.0.1:{port}/"
    yield app
    app.close()


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i in range(4):
        make_photo(i, (240, 200)).save(folder / f"dog{i}.jpg")
    return sorted(folder.iterdir())


def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def train(app, key: str, photos, name: str = "Bruno", class_noun: str = "dog") -> str:
    """Train through /train to the end; return the last status line."""
    from gradio_client import handle_file

    job = client(app).submit([handle_file(str(p)) for p in photos], name, class_noun, "tiny", None, STEPS, 0, 0, 0, "off",
                             key, api_name="/train")
    return job.result(timeout=300)[0]


def handler(app, name: str):
    """One of `app`'s event handlers, by its API name or (for private ones) its function's name."""
    return next(f.fn for f in app.fns.values() if f.fn is not None and name in (f.api_name, f.fn.__name__))


def listed_as(service, owner: str, pet_id: str, number: int) -> str:
    """How the lists call `owner`'s pet `pet_id`, the `number`th of theirs with its name."""
    pet = service.store.pet(owner, pet_id)
    return f"{pet.name} #{number} ({datetime.fromisoformat(pet.created_at):%d %b %H:%M} UTC)"


def until_training_shows(job, timeout=120):
    """Wait until the /train or /follow_training stream `job` shows a training step; return `job`."""
    deadline = time.monotonic() + timeout
    while not any("Training Rex: step" in str(update[0]) for update in job.outputs()):
        assert time.monotonic() < deadline and not job.done(), job.outputs()
        time.sleep(0.2)
    return job


def long_training(api, key: str, photos):
    """A 2000-step training of Rex through client `api`'s /train, once its first step shows (cancel it when
    done; that client's /cancel_training knows the run)."""
    from gradio_client import handle_file

    return until_training_shows(api.submit([handle_file(str(p)) for p in photos], "Rex", "dog", "tiny", None,
                                           2000, 0, 0, 0, "off", key, api_name="/train"))


@pytest.fixture(scope="module")
def alices_pet(served_app, photo_files) -> dict:
    status = train(served_app, ALICE, photo_files)
    assert status == "✅ Bruno is ready: chat with them on the Chat tab."
    [pet] = client(served_app).predict(ALICE, api_name="/pets")
    return pet


def test_page_is_served_with_the_tiny_banner(served_app):
    page = httpx.get(served_app.url, timeout=30)
    assert page.status_code == 200 and "PetDream" in page.text
    config = httpx.get(served_app.url + "config", timeout=30).json()
    assert config["title"] == "PetDream" and config["analytics_enabled"] is False
    assert config["run_history"] is False  # no copy of anyone's chats in the browser, kept or not
    texts = " ".join(str(c.get("props", {}).get("value", "")) for c in config["components"])
    assert "random weights" in texts and "profile" not in texts.split("⚠️")[0]  # the header is for visitors


def test_check_photos_endpoint_reports_accepted_and_rejected(served_app, tmp_path):
    from gradio_client import handle_file

    files = []
    for i in range(2):
        make_photo(i).save(tmp_path / f"dog{i}.jpg")
        files.append(tmp_path / f"dog{i}.jpg")
    (tmp_path / "readme.png").write_text("hello")
    files.append(tmp_path / "readme.png")
    with open(tmp_path / "huge.jpg", "wb") as huge:  # one file too big must not cost the good ones
        huge.write(os.urandom(31 * 2**20))
    files.append(tmp_path / "huge.jpg")
    summary, gallery, table = client(served_app).predict([handle_file(str(f)) for f in files], api_name="/check_photos")
    assert summary == "**2 usable photos: add 1 more to train.**"
    assert len(gallery) == 2
    assert table["data"][0][0] == "readme.png" and "not a photo" in table["data"][0][1]
    assert table["data"][1][0] == "huge.jpg" and "is 31 MB; files over 30 MB are not" in table["data"][1][1]


def test_training_with_too_few_photos_or_no_kind_of_pet_says_what_to_do(served_app, photo_files, capfd):
    with pytest.raises(Exception, match="DreamBooth needs at least 3. Add 1 more photo"):
        train(served_app, ALICE, photo_files[:2], name="Rex")
    with pytest.raises(Exception, match=r"Say what kind of animal Rex is \(the class noun: dog, cat, ...\): the "
                                        "model learns the pet as one of its kind"):  # none is chosen for them
        train(served_app, ALICE, photo_files, name="Rex", class_noun="")
    # Everything to fix at once, one to a line, not one per click of Train.
    pets_before = client(served_app).predict(ALICE, api_name="/pets")
    with pytest.raises(Exception) as refused:
        train(served_app, ALICE, photo_files[:1], name=" ", class_noun="")
    lines = str(refused.value).split("<br>")
    assert lines[0].endswith("Three things to fix before training:")
    assert lines[1].startswith("• Only 1 usable photo; DreamBooth needs at least 3. Add 2 more photos")
    assert lines[2:] == ["• The pet needs a name.", "• Say what kind of animal your pet is (the class noun: dog, cat, "
                         "...): the model learns the pet as one of its kind, and the wrong kind draws the wrong animal."]
    assert client(served_app).predict(ALICE, api_name="/pets") == pets_before  # nothing made of what was refused
    assert "Traceback" not in capfd.readouterr().err  # a refusal is no fault of the app's: its log stays clean


def test_a_script_trains_chats_draws_rates_and_evaluates(served_app, alices_pet):
    assert alices_pet["name"] == "Bruno" and alices_pet["phrase"] == "bruno dog" and alices_pet["trained"]
    api = client(served_app)

    chat = api.submit("I feel a bit lonely today", alices_pet["id"], "Ana", "", "", [], ALICE, api_name="/chat")
    chat.result(timeout=300)
    history = chat.outputs()[-1][0]
    texts = [part["text"] for m in history for part in m["content"] if part.get("type") == "text"]
    files = [part["file"] for m in history for part in m["content"] if part.get("type") == "file"]
    assert history[0]["role"] == "user" and texts[0] == "I feel a bit lonely today"
    assert len(texts) >= 2 and texts[1].strip()  # the companion's reply
    assert len(files) == 1 and files[0].endswith(".png")  # the pet's picture, inline
    # Notices held the reply's place, then the picture's, as they were made; none is left.
    shown = [[part["text"] for m in update[0] for part in m["content"] if part.get("type") == "text"]
             for update in chat.outputs()]
    assert shown[0][-1].startswith("_Thinking...")
    assert any(len(texts) == 3 and texts[2] == "_Drawing Bruno..._" for texts in shown)
    assert not [text for text in texts if text.startswith(("_Thinking", "_Drawing"))]

    picture = api.predict(alices_pet["id"], "a photo of bruno dog on a beach", 7, ALICE, api_name="/generate")
    assert os.path.getsize(picture) > 0
    service = served_app.petdream_service
    owner = f"session:{ALICE}"
    images = service.store.images(owner, alices_pet["id"])
    assert len(images) == 2 and images[-1].seed == 7 and images[-1].prompt == "a photo of bruno dog on a beach"
    service.rate(owner, images[-1].id, True)
    assert [i.id for i in service.store.liked_images(owner, alices_pet["id"])] == [images[-1].id]

    evaluation = api.submit(alices_pet["id"], "quick (4 prompts, 1 picture each)", 5, ALICE, api_name="/evaluate")
    evaluation.result(timeout=600)
    status, metrics, grid, chart, report = evaluation.outputs()[-1]
    assert status.startswith("✅ Done") and "CLIPScore" in status
    assert "| CLIPScore" in metrics or "CLIPScore" in metrics.split("\n## ")[1]
    assert os.path.getsize(chart) > 0
    assert sorted(os.path.basename(f) for f in report) == ["grid.png", "report.json", "report.md"]
    with Image.open(grid) as shown, Image.open(next(f for f in report if f.endswith("grid.png"))) as full:
        assert shown.format == "WEBP" and shown.size == full.size  # the page gets the grid small, the files in full

    # Back later (a reload, another pet chosen and this one again): the last evaluation is shown, not lost.
    last_status, last_metrics, last_grid, last_chart, last_files = handler(served_app, "show_last")(
        alices_pet["id"], ALICE, None)
    assert last_status.startswith("Last evaluated ") and last_status.endswith(" UTC.")  # of the model as it is
    saved = Path(next(f for f in report if f.endswith("report.md"))).read_text()
    assert last_metrics.strip() == saved.strip() and last_grid.size == full.size and os.path.getsize(last_chart) > 0
    # Its verdict, once: said in a fresh evaluation's status line, under "In short" in the kept one (and the file).
    assert "## In short" in last_metrics and "## In short" not in metrics
    assert metrics.strip() == saved.replace(saved[saved.index("## In short"):saved.index("Bruno's model (")], "").strip()
    assert sorted(os.path.basename(f) for f in last_files) == ["grid.png", "report.json", "report.md"]
    assert handler(served_app, "show_last")(alices_pet["id"], BOB, None) == ("", "", None, None, None)  # not Bob's
    assert handler(served_app, "show_last")("", ALICE, None) == ("", "", None, None, None)  # no pet chosen


def test_a_kept_conversation_is_shown_again_with_its_pictures_and_their_thumbs(served_app, alices_pet, monkeypatch):
    import gradio as gr

    def empty(shown_on_choosing):
        view, pictures, scene, keeps, shown_for, _ = shown_on_choosing
        return (view.value == [] and view.feedback_value == [] and pictures == {} and scene == "" and keeps is False
                and shown_for == pet)

    api, service, pet, owner = client(served_app), served_app.petdream_service, alices_pet["id"], f"session:{ALICE}"
    consent, show_kept = handler(served_app, "consent"), handler(served_app, "show_kept")
    assert empty(show_kept(pet, "another-pet", [], {}, "", {}, ALICE, None))  # not kept: a first chat starts empty
    consent(True, ALICE, None)
    heard, chat = [], service.chat  # what the companion is told of the conversation so far
    monkeypatch.setattr(service, "chat", lambda *args, **kwargs: heard.append(kwargs["history"]) or chat(*args, **kwargs))
    try:
        first = api.submit("I got a promotion today", pet, "", "", "", [], ALICE, api_name="/chat")
        first.result(timeout=300)
        said = [m for m in first.outputs()[-1][0] if all(part["type"] == "text" for part in m["content"])]
        api.submit("thank you", pet, "", "", "", said, ALICE, api_name="/chat").result(timeout=300)
        assert heard[0] == [] and [turn["role"] for turn in heard[1]] == ["user", "assistant"]
        assert heard[1][0]["content"] == "I got a promotion today" and heard[1][1]["content"].strip()
        picture = service.store.images(owner, pet)[-1]
        service.rate(owner, picture.id, True)
        # The person comes back and chooses the pet.
        view, pictures, scene, keeps, _, _ = show_kept(pet, "", [], {}, "", {}, ALICE, None)
        assert keeps is True and scene == picture.prompt  # New picture draws the last picture's scene again
        [asked, replied, drawn, *_] = view.value
        assert asked["content"][0]["text"] == "I got a promotion today" and replied["content"][0]["text"].strip()
        assert drawn["role"] == "assistant" and drawn["content"][0]["file"]["path"].endswith(".png")
        assert view.value[-1]["content"][0]["file"]["path"].endswith(".png")  # the second reply's picture
        assert pictures == {2: pictures[2], len(view.value) - 1: picture.id}  # the thumbs rate those pictures
        assert view.feedback_value == [None, None, None, "Like"]  # as the person rated them
        # The chat's trash button clears the screen, as a chat app's does, and says the conversation is kept.
        told = []
        monkeypatch.setattr(gr, "Info", told.append)
        assert handler(served_app, "cleared")(pet, ALICE, None) == ({}, "")
        assert told == ["Cleared from the screen. Your conversation with Bruno is still kept: untick Keep my "
                        "conversations to delete it."] and len(service.store.chat_turns(owner, pet)) == 4
    finally:
        consent(False, ALICE, None)
    assert empty(show_kept(pet, pet, [], {}, "", {}, ALICE, None)) and service.store.chat_turns(owner) == []


def test_a_conversation_not_kept_is_there_again_on_switching_back_to_its_pet_until_the_page_closes(
        served_app, alices_pet, tiny):
    service, owner, bruno = served_app.petdream_service, f"session:{ALICE}", alices_pet["id"]
    mia = add_trained_pet(service.store, owner, tiny, name="Mia", class_noun="cat").id
    show_kept = handler(served_app, "show_kept")

    def texts(view):
        return [part["text"] for message in view.value for part in message["content"]]

    with_bruno = [{"role": "user", "content": "hello Bruno"}, {"role": "assistant", "content": "Hi!"}]
    view, pictures, scene, keeps, shown_for, unkept = show_kept(mia, bruno, with_bruno, {1: 5}, "on a beach", {},
                                                                ALICE, None)
    assert keeps is False and texts(view) == [] and shown_for == mia  # Mia's own chat: none yet
    view, pictures, scene, _, shown_for, unkept = show_kept(bruno, mia, [{"role": "user", "content": "hello Mia"}], {},
                                                            "", unkept, ALICE, None)
    # Bruno's, as it was left, with what New picture draws and the thumbs' pictures.
    assert (texts(view), pictures, scene, shown_for) == (["hello Bruno", "Hi!"], {1: 5}, "on a beach", bruno)
    view, *_, unkept = show_kept(mia, bruno, with_bruno, {1: 5}, "on a beach", unkept, ALICE, None)
    assert texts(view) == ["hello Mia"]
    service.delete_pet(owner, mia)  # a deleted pet's chat goes with it
    view, *_, unkept = show_kept("", mia, [{"role": "user", "content": "hello Mia"}], {}, "", unkept, ALICE, None)
    assert texts(view) == [] and list(unkept) == [bruno]
    view, pictures, scene, *_ = show_kept(bruno, "", [], {}, "", unkept, ALICE, None)  # and Bruno chosen again
    assert (texts(view), pictures, scene) == (["hello Bruno", "Hi!"], {1: 5}, "on a beach")


def test_a_namesakes_training_says_which_pet_it_is_and_keeps_its_photos_unless_it_finishes(served_app, alices_pet,
                                                                                          photo_files, monkeypatch):
    import gradio as gr

    told = []
    monkeypatch.setattr(gr, "Info", told.append)
    service, owner = served_app.petdream_service, f"session:{ALICE}"
    following = handler(served_app, "train")(photo_files, "Bruno", "dog", "tiny", None, 2000, 0, 0, 0, "off", ALICE,
                                             None)
    run, status, *_ = next(following)
    second = service.store.run(owner, run).pet_id
    label = listed_as(service, owner, second, 2)
    while not status.startswith("Training "):
        _, status, _, chart, _ = next(following)
    try:
        assert status.startswith(f"Training {label}: step ")  # the status line says which Bruno trains
        assert chart.x_lim == [1, 2000]  # the loss chart spans the whole run, not half steps of the first few
        assert told == [f"You already have a pet named Bruno: this trains another, listed as {label}. To teach the "
                        "first one more, use Teach on the Chat tab."]
    finally:
        service.cancel_training(owner, run)
        for _, status, *_ in following:  # to its end
            pass
    assert status.startswith("⏹ Cancelled at step ")
    offered, _ = handler(served_app, "list_resumable")(ALICE, None)
    assert [choice for choice, offered_run in offered.choices if offered_run == run][0].startswith(
        f"{label}: cancelled at step ")
    # Not finished: the photos and the name stay where they are, to train again or resume, and the status line
    # says whose they are (another pet's added to them would train one pet on both).
    trained = {"photos": [str(path) for path in photo_files], "name": "Bruno"}
    ready_for_next_pet = handler(served_app, "ready_for_next_pet")
    *fields, line, sent, draft = ready_for_next_pet(run, trained, trained["photos"], "Bruno", "dog", status, ALICE,
                                                    None)
    assert fields == [gr.skip()] * 3
    assert line == f"{status}\n\nThe photos above are for {label}: remove them (×) before adding another pet's."
    # ... and are the draft's again, what Train sent forgotten: a reload keeps them (a run that diverged cannot be
    # resumed, so they would be lost).
    assert sent is None and (draft["photos"], draft["name"], draft["kind"]) == (trained["photos"], "Bruno", "dog")
    service.delete_pet(owner, second)

    # A namesake of a pet whose training never finished: Teach cannot help it, Resume can.
    key = "n" * 40
    first = service.store.add_pet(f"session:{key}", "Rex", "dog", "rex")
    cut_off = service.store.add_run(f"session:{key}", first.id, {"steps": 2000})
    service.store.update_run(f"session:{key}", cut_off.id, status="cancelled", metrics={"step": 40})
    told.clear()
    following = handler(served_app, "train")(photo_files, "Rex", "dog", "tiny", None, 2000, 0, 0, 0, "off", key, None)
    run, *_ = next(following)
    try:
        rex_2 = listed_as(service, f"session:{key}", service.store.run(f"session:{key}", run).pet_id, 2)
        assert told == [f"You already have a pet named Rex: this trains another, listed as {rex_2}. To go on with "
                        "the first one's training instead, cancel this one and resume that one under Unfinished "
                        "trainings."] and first.model_dir is None
    finally:
        service.cancel_training(f"session:{key}", run)
        for _ in following:
            pass
        service.forget_owner(f"session:{key}")


def test_a_finished_training_clears_its_photos_and_name_for_the_next_pet(served_app, alices_pet, photo_files,
                                                                        tmp_path):
    import gradio as gr

    service, owner = served_app.petdream_service, f"session:{ALICE}"
    [run] = [run for run in service.store.runs(owner, alices_pet["id"]) if run.init_model_dir is None]
    ready_for_next_pet = handler(served_app, "ready_for_next_pet")
    trained = {"photos": [str(path) for path in photo_files], "name": "Bruno"}  # what Train sent
    finished = "✅ Bruno is ready: chat with them on the Chat tab."
    assert ready_for_next_pet(run.id, trained, trained["photos"], "Bruno", "dog", finished, ALICE, None) == (
        None, "", None, f"{finished}\n\nReady for your next pet: the photos, name and kind above are cleared.",
        gr.skip(), gr.skip())
    # A photo added and a name typed while it trained are the next pet's: they stay.
    added = str(tmp_path / "next-pet.jpg")
    assert ready_for_next_pet(run.id, trained, [*trained["photos"], added], "Milo", "cat", finished, ALICE, None)[:4] == (
        [added], gr.skip(), gr.skip(), f"{finished}\n\nReady for your next pet: its photos are cleared; the photos "
                            "added while it trained stay.")
    assert ready_for_next_pet(run.id, trained, trained["photos"], "Bruno", "dog", "", BOB, None) == (gr.skip(),) * 6


def test_a_reload_gives_back_the_photos_name_and_kind_not_yet_trained_on_and_only_uploads(served_app, tmp_path):
    import gradio as gr
    from gradio.utils import get_upload_folder

    save_draft, restore_draft = handler(served_app, "save_draft"), handler(served_app, "restore_draft")
    uploaded = Path(get_upload_folder()) / "draft-test" / "milo.jpg"
    uploaded.parent.mkdir(parents=True, exist_ok=True)
    make_photo(0).save(uploaded)
    draft = save_draft([str(uploaded)], "Milo", "cat", None, ALICE, None)
    assert restore_draft(draft, ALICE, None) == ([str(uploaded)], "Milo", "cat")
    # Only to its person: on a shared computer, the next one's page does not get it; signed in on this browser
    # (the sign-in reloads the page), its person still does.
    assert restore_draft(draft, BOB, None) == (gr.skip(),) * 3
    alice = gr.OAuthProfile({"name": "Alice", "preferred_username": "alice", "profile": "", "picture": ""})
    assert restore_draft(draft, ALICE, None, alice)[1] == "Milo"
    signed_in = save_draft([], "Rex", "dog", None, ALICE, None, alice)
    assert restore_draft(signed_in, ALICE, None) == (gr.skip(),) * 3  # signed out, the browser's own page: not theirs
    # What Train took is its pet's: the draft keeps only what was added or typed since.
    trained = {"photos": [str(uploaded)], "name": "Milo"}
    assert restore_draft(save_draft([str(uploaded)], "Milo", "cat", trained, ALICE, None), ALICE, None) == (
        None, "", None)
    # The draft lives in the browser, which can change it: nothing outside Gradio's uploads is handed back,
    # not through a link in them either.
    outside = tmp_path / "secret.jpg"
    make_photo(1).save(outside)
    (uploaded.parent / "link.jpg").symlink_to(outside)
    forged = {**draft, "photos": [str(outside), str(uploaded.parent / "link.jpg"), "/etc/passwd", 7, str(uploaded)]}
    assert restore_draft(forged, ALICE, None) == ([str(uploaded)], "Milo", "cat")
    assert restore_draft({**draft, "photos": "/etc/passwd", "kind": 7}, ALICE, None) == (None, "Milo", "7")
    assert restore_draft("not a draft", ALICE, None) == restore_draft({}, ALICE, None) == (gr.skip(),) * 3


def test_the_chat_chooses_the_pet_last_chatted_with_in_this_browser_while_it_is_still_there(served_app, alices_pet,
                                                                                           tiny):
    key, service = "m" * 40, served_app.petdream_service
    owner = f"session:{key}"
    older, newer = (add_trained_pet(service.store, owner, tiny, name=name) for name in ("Nala", "Milo"))
    chat_pets = handler(served_app, "list_chat_pets")  # on the page's load, with the pet this browser remembers
    try:
        assert chat_pets(None, key, "", None).value == newer.id  # never chatted here: the newest
        assert chat_pets(None, key, older.id, None).value == older.id  # the page opened again
        assert chat_pets(newer.id, key, older.id, None).value == newer.id  # a pet chosen on the page stays chosen
        assert chat_pets(None, key, alices_pet["id"], None).value == newer.id  # someone else's pet: never
        service.delete_pet(owner, older.id)
        assert chat_pets(None, key, older.id, None).value == newer.id  # deleted since
    finally:
        service.forget_owner(owner)


def test_a_fault_while_answering_is_told_kindly_and_logged_with_its_cause(served_app, alices_pet, monkeypatch,
                                                                         caplog, capfd):
    def broken_chat(*args, **kwargs):
        raise RuntimeError("the chat model's file is damaged")

    service = served_app.petdream_service
    monkeypatch.setattr(service, "chat", broken_chat)
    caplog.set_level(logging.ERROR, logger="petdream.ui.chat_tab")
    with pytest.raises(Exception, match="Something went wrong while answering: the chat model's file is damaged"):
        client(served_app).predict("I feel a bit low", alices_pet["id"], "", "", "", [], ALICE, api_name="/chat")
    [logged] = [r for r in caplog.records if r.name == "petdream.ui.chat_tab"]
    assert logged.exc_info[0] is RuntimeError and "broken_chat" in caplog.text  # where it failed, for whoever fixes it
    assert "I feel a bit low" not in caplog.text + capfd.readouterr().err  # the person's words stay out of the log


def test_a_kept_crisis_reply_is_set_apart_under_its_title_as_it_was_live(served_app, alices_pet):
    import gradio as gr

    from petdream.companion.safety import CRISIS_MESSAGE
    from petdream.ui.chat_tab import CRISIS_TITLE

    api, pet = client(served_app), alices_pet["id"]
    consent, show_kept = handler(served_app, "consent"), handler(served_app, "show_kept")
    consent(True, ALICE, None)
    try:
        chat = api.submit("I want to end my life", pet, "", "", "", [], ALICE, api_name="/chat")
        chat.result(timeout=300)
        [live] = [message for message in chat.outputs()[-1][0] if message["role"] == "assistant"]
        view, *_ = show_kept(pet, "", [], {}, "", {}, ALICE, None)  # the person comes back and chooses the pet
        [kept] = [message for message in view.value if message["role"] == "assistant"]
        # A pet that cannot be loaded (deleted in another tab, the page not yet told): help does not wait on it.
        lost = api.submit("I want to end my life", "no-such-pet", "", "", "", [], ALICE, api_name="/chat")
        lost.result(timeout=60)
        [unloaded] = [message for message in lost.outputs()[-1][0] if message["role"] == "assistant"]
        # No pet chosen yet (a new visitor, or one whose first pet still trains): a crisis is answered even so.
        alone = api.submit("I want to end my life", "", "", "", "", [], "z" * 40, api_name="/chat")
        alone.result(timeout=60)
        [unpetted] = [message for message in alone.outputs()[-1][0] if message["role"] == "assistant"]
        with pytest.raises(Exception, match="Choose a pet first"):  # anything else waits for a pet
            api.predict("I had a nice day", "", "", "", "", [], "z" * 40, api_name="/chat")
        # That reply stays on screen when the first pet comes (nothing is kept, but it holds the helplines).
        consent(False, "z" * 40, None)
        on_screen = alone.outputs()[-1][0]
        assert handler(served_app, "show_kept")(pet, "", on_screen, {}, "", {}, "z" * 40, None)[0] == gr.skip()
    finally:
        consent(False, ALICE, None)
    assert (live["content"][0]["text"] == kept["content"][0]["text"] == unpetted["content"][0]["text"]
            == unloaded["content"][0]["text"])
    assert live["content"][0]["text"].startswith(f"**{CRISIS_TITLE}**\n\nI'm really glad you told me.")
    for link in ("[call 988](tel:988) or [text 988](sms:988)", "[Text HOME to 741741](sms:741741?&body=HOME)",
                 "[911](tel:911)", "[llama al 988](tel:988)", "[findahelpline.com](https://findahelpline.com)"):
        assert link in kept["content"][0]["text"]  # a tap on a phone calls, texts or opens the directory
    assert CRISIS_MESSAGE.splitlines()[0] in unpetted["content"][0]["text"]


def test_another_person_sees_none_of_the_pets_pictures_or_files(served_app, alices_pet, data_dir):
    bob = client(served_app)
    assert bob.predict(BOB, api_name="/pets") == []
    assert bob.predict("", api_name="/pets") == []  # a script with no key: its own connection's pets
    with pytest.raises(Exception, match="No such pet"):
        bob.predict(alices_pet["id"], "a photo of bruno dog", 1, BOB, api_name="/generate")
    chat = bob.submit("hello", alices_pet["id"], "", "", "", [], BOB, api_name="/chat")
    with pytest.raises(Exception, match="No such pet"):
        chat.result(timeout=60)
    assert chat.outputs()[-1] == ([], "hello")  # unanswered: the message is back in its box to send again
    with pytest.raises(Exception, match="No such pet"):
        bob.submit(alices_pet["id"], "quick (4 prompts, 1 picture each)", 5, BOB, api_name="/evaluate").result(
            timeout=60)

    # Guessing file URLs: Alice's photos, pictures and weights are on disk under the data dir.
    owner_folder = next((data_dir / "people").iterdir())
    secrets_on_disk = [p for p in owner_folder.rglob("*") if p.suffix in (".png", ".safetensors", ".json")]
    assert secrets_on_disk
    for path in secrets_on_disk[:10] + [data_dir / "petdream.sqlite3"]:
        for url in (f"gradio_api/file={path}", f"file={path}", f"gradio_api/file={os.path.relpath(path, REPO)}"):
            answer = httpx.get(served_app.url + url, timeout=30)
            assert answer.status_code in (403, 404), (url, answer.status_code)


def test_a_reloaded_page_follows_and_can_cancel_the_training_still_running(served_app, photo_files):
    """A second client with the same browser key (a reload, another tab) gets the live training's
    progress from the page's load event, and its Cancel stops that training."""
    key = "e" * 40
    first = long_training(client(served_app), key, photo_files)
    reloaded = client(served_app)
    followed = until_training_shows(reloaded.submit(key, api_name="/follow_training"))
    reloaded.predict(key, api_name="/cancel_training")
    status = followed.result(timeout=120)[0]
    assert status.startswith("⏹ Cancelled at step ") and status.endswith(": resume it under Unfinished trainings.")
    assert first.result(timeout=120)[0] == status
    # Unfinished trainings opens with it chosen, saying where it stopped.
    step = status.removeprefix("⏹ Cancelled at step ").split(":")[0]
    offered, unfinished = handler(served_app, "list_resumable")(key, None)
    [(label, run)] = offered.choices
    assert offered.value == run and unfinished.open is True
    assert label.startswith(f"Rex: cancelled at step {step} of 2000, started ")
    # A page loaded later shows how it ended (a status line left empty read as nothing having happened).
    assert client(served_app).predict(key, api_name="/follow_training")[0] == status


def test_a_page_loaded_later_shows_the_training_that_ended_last_a_resumed_one_too(tiny, data_dir, tmp_path):
    from petdream.service import PetDreamService
    from petdream.training.queue import TrainingJob

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "models").symlink_to(data_dir / "models")
    service = PetDreamService(Settings.from_env({}, data_dir=tmp_path / "data", profile="tiny", device="cpu"), tiny)
    owner, jobs = "session:" + "f" * 40, {}

    def cancelled(job):
        job.status = "cancelled"

    for name in ("Rex", "Mia"):  # Rex's training made first, then Mia's; both cancelled, in that order
        pet = service.store.add_pet(owner, name, "dog", name.lower())
        run = service.store.add_run(owner, pet.id, {"steps": 4})
        for status in ("running", "cancelled"):
            service.store.update_run(owner, run.id, status=status)
        jobs[name] = service.trainings.submit(TrainingJob(run.id, owner, name, 4), cancelled)
    wait_for = time.monotonic() + 30
    while not all(job.done for job in jobs.values()):
        assert time.monotonic() < wait_for
        time.sleep(0.05)
    assert service.latest_training(owner) is jobs["Mia"]
    for status in ("queued", "running", "cancelled"):  # Rex resumed, and stopped again: the last to end
        service.store.update_run(owner, jobs["Rex"].run_id, status=status)
    assert service.latest_training(owner) is jobs["Rex"]
    assert service.latest_training("session:" + "g" * 40) is None  # nobody else's


def test_a_browser_finds_its_pets_again_after_a_restart(served_app, data_dir, tmp_path):
    """Its owner key sits encrypted in its local storage; the key to read it back is the data dir's, not the
    process's (Gradio's default), so a restarted app still knows the browser."""
    import gradio as gr

    from petdream.ui.session import browser_state_secret

    states = {block.storage_key: block for block in served_app.blocks.values() if isinstance(block, gr.BrowserState)}
    # its owner key, the pet last chatted with, the photos and name not yet trained on
    assert sorted(states) == ["petdream-browser-id", "petdream-chat-pet", "petdream-draft"]
    for state in states.values():
        # What a restart over the same data dir reads (another data dir has a key of its own).
        assert state.secret == browser_state_secret(data_dir) != browser_state_secret(tmp_path)
    assert len(state.secret) >= 32 and (data_dir / "browser-state.secret").stat().st_mode & 0o777 == 0o600


def test_pets_of_the_same_name_are_told_apart_in_the_lists():
    from types import SimpleNamespace

    from petdream.ui.session import pet_choices

    pets = [SimpleNamespace(id="b", name="Bruno", created_at="2026-11-27T08:44:05+00:00", model_dir="b/model"),
            SimpleNamespace(id="m", name="Milo", created_at="2026-11-27T08:40:00+00:00", model_dir="m/model"),
            SimpleNamespace(id="a", name="Bruno", created_at="2026-11-26T19:02:00+00:00", model_dir=None)]
    assert pet_choices(pets) == [("Bruno #1 (26 Nov 19:02 UTC)", "a"), ("Milo", "m"),
                                 ("Bruno #2 (27 Nov 08:44 UTC)", "b")]
    # The first Bruno never finished training: the lists of trained pets still call the second one #2.
    assert pet_choices(pets, trained_only=True) == [("Milo", "m"), ("Bruno #2 (27 Nov 08:44 UTC)", "b")]


RESTART_SCRIPT = r"""
import sys, time
from pathlib import Path
from petdream.service import PetDreamService
from petdream.settings import Settings
service = PetDreamService(Settings.from_env({}, data_dir=sys.argv[1], profile="tiny", device="cpu"))
job = service.start_training("session:" + "c" * 40, "Rex", "dog", sys.argv[2:], "tiny", steps=40,
                             checkpoint_every=5, prior_preservation=False)
print(job.run_id, flush=True)
time.sleep(600)
"""


def test_a_training_cut_off_by_a_restart_shows_as_resumable_and_resumes(tiny, data_dir, photo_files, tmp_path, caplog):
    from petdream.service import PetDreamService

    restart_dir = tmp_path / "data"
    restart_dir.mkdir()
    (restart_dir / "models").symlink_to(data_dir / "models")  # the tiny models, built once for the session
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", RESTART_SCRIPT, str(restart_dir), *map(str, photo_files)],
                               stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    run_id = process.stdout.readline().strip()
    owner = "session:" + "c" * 40
    deadline = time.monotonic() + 180
    while not list(restart_dir.glob("people/*/pets/*/runs/*/checkpoints/step-*")):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint was written"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)  # the Space restarts: no goodbye, no cleanup
    process.wait()

    service = PetDreamService(Settings.from_env({}, data_dir=restart_dir, profile="tiny", device="cpu"), tiny)
    [run] = service.store.resumable_runs(owner)
    assert run.id == run_id and run.status == "interrupted"
    caplog.set_level(logging.INFO, logger="petdream.service")
    job = service.resume_training(owner, run_id)
    while not job.done:
        time.sleep(0.2)
    assert job.status == "finished", job.message
    assert job.step == 40 and f"training run {run_id}: Resuming from step " in caplog.text  # the notes stay in the log
    assert 0 < job.resumed_from < 40  # it went on from the checkpoint, not from step 0,
    assert len(job.losses) == 40  # and its chart shows the whole run, the steps before too
    [pet] = service.pets(owner, trained_only=True)
    assert pet.name == "Rex" and service.store.run(owner, run_id).status == "finished"
    assert service.pet_model(owner, pet.id).training["steps_done"] == 40


def test_emptied_advanced_fields_mean_the_presets_values():
    from petdream.training import TrainingConfig
    from petdream.ui.train_tab import advanced_overrides

    emptied = advanced_overrides(None, None, None, None, None, "preset")  # what Gradio sends for cleared fields
    assert TrainingConfig.preset("quick", **emptied) == TrainingConfig.preset("quick", seed=0)
    chosen = advanced_overrides("full", 120, 2e-6, 0, 7, "off")
    assert TrainingConfig.preset("quick", **chosen) == TrainingConfig.preset(
        "quick", method="full", steps=120, learning_rate=2e-6, seed=7, prior_preservation=False)


def test_a_crashed_or_cancelled_waiting_training_can_be_resumed_once(tiny, data_dir, photo_files, tmp_path,
                                                                      monkeypatch):
    """A bug that crashes a run leaves it failed, not "running" for ever; a training cancelled while
    waiting in line is cancelled in the store too; either is offered again, and a second Resume of a
    run already back in line is refused, not queued twice."""
    from petdream.service import PetDreamService
    from petdream.training import DreamBoothTrainer

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "models").symlink_to(data_dir / "models")
    service = PetDreamService(Settings.from_env({}, data_dir=tmp_path / "data", profile="tiny", device="cpu"), tiny)
    owner, settings = "session:" + "d" * 40, dict(steps=4, checkpoint_every=2, prior_preservation=False)
    crash = {"on": True}
    real_sample = DreamBoothTrainer._sample

    def sample_or_crash(self, run, step):
        if crash["on"]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real_sample(self, run, step)

    monkeypatch.setattr(DreamBoothTrainer, "_sample", sample_or_crash)
    first = service.start_training(owner, "Rex", "dog", photo_files, "tiny", **settings)
    waiting = service.start_training(owner, "Fido", "dog", photo_files, "tiny", **settings)
    assert service.cancel_training(owner, waiting.run_id) and waiting.status == "cancelled"
    assert service.store.run(owner, waiting.run_id).status == "cancelled"
    again = service.resume_training(owner, waiting.run_id)
    with pytest.raises(ValueError, match="The training of Fido cannot be resumed now: (Waiting|Starting)"):
        service.resume_training(owner, waiting.run_id)
    assert service.cancel_training(owner, again.run_id)

    while not first.done:
        time.sleep(0.1)
    assert first.status == "failed" and first.message.startswith(
        "Training stopped unexpectedly (RuntimeError: CUDA error: an illegal memory access was encountered).")
    assert {r.id: r.status for r in service.store.runs(owner)} == {first.run_id: "failed", waiting.run_id: "cancelled"}

    crash["on"] = False
    resumed = service.resume_training(owner, first.run_id)
    while not resumed.done:
        time.sleep(0.1)
    assert resumed.status == "finished" and resumed.resumed_from == 2  # on from step 2's checkpoint
    with pytest.raises(ValueError, match="The training of Rex cannot be resumed now: finished"):
        service.resume_training(owner, first.run_id)


def test_a_diverged_training_is_not_offered_for_resuming(tiny, data_dir, photo_files, tmp_path, monkeypatch):
    """Resuming draws the same batches from the same weights, so a run whose loss became NaN would
    diverge again: it is not listed, and Resume is refused with the reason."""
    from petdream.service import PetDreamService
    from petdream.training import DreamBoothTrainer

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "models").symlink_to(data_dir / "models")
    service = PetDreamService(Settings.from_env({}, data_dir=tmp_path / "data", profile="tiny", device="cpu"), tiny)
    owner, settings = "session:" + "e" * 40, dict(steps=4, checkpoint_every=2, prior_preservation=False)
    real_loss = DreamBoothTrainer._loss
    monkeypatch.setattr(DreamBoothTrainer, "_loss", lambda self, *args: real_loss(self, *args) * float("nan"))
    diverged = service.start_training(owner, "Rex", "dog", photo_files, "tiny", **settings)
    while not diverged.done:
        time.sleep(0.1)
    assert diverged.status == "failed" and diverged.message.startswith("The loss became nan at step 1")
    assert service.store.resumable_runs(owner) == []
    with pytest.raises(ValueError, match="The training of Rex cannot be resumed now: The loss became nan at step 1.*"
                                         "resuming would repeat the same steps"):
        service.resume_training(owner, diverged.run_id)


def test_liked_pictures_teach_the_pet_further_from_its_current_weights(served_app, alices_pet):
    service, owner = served_app.petdream_service, f"session:{ALICE}"
    before = service.pet_model(owner, alices_pet["id"])
    picture = service.draw(owner, alices_pet["id"], "a photo of bruno dog in the snow", seed=11)
    service.rate(owner, picture.image_id, True)

    job = service.train_further(owner, alices_pet["id"])
    while not job.done:
        time.sleep(0.2)
    assert job.status == "finished", job.message
    after = service.pet_model(owner, alices_pet["id"])
    assert after.path != before.path  # a new model; the old one stays until the new one is complete
    assert (after.path / after.training["init_model"]["path"]).resolve() == before.path.resolve()
    assert after.lora_weights.read_bytes() != before.lora_weights.read_bytes()
    photos = service.store.paths(owner, alices_pet["id"]).run_photos(job.run_id)
    assert (photos / f"liked-{picture.image_id}.png").is_file()
    assert len(after.photos) == len(before.photos) + len(service.store.liked_images(owner, alices_pet["id"]))


def test_a_cancelled_teach_run_resumes_after_a_later_one_learned_more_liked_pictures(served_app, alices_pet):
    """Each Teach my pet run trains on its own photo set: liking more pictures later (and teaching
    again) does not change what a cancelled run resumes on."""
    service, owner, pet = served_app.petdream_service, f"session:{ALICE}", alices_pet["id"]

    def like(seed):
        service.rate(owner, service.draw(owner, pet, "a photo of bruno dog on a sofa", seed=seed).image_id, True)

    def until_done(job):
        while not job.done:
            time.sleep(0.1)
        return job

    like(21)
    cut = service.train_further(owner, pet)
    while cut.step < 1:
        assert not cut.done, cut.message
        time.sleep(0.05)
    service.cancel_training(owner, cut.run_id)
    assert until_done(cut).status == "cancelled", cut.message
    like(22)
    assert until_done(service.train_further(owner, pet)).status == "finished"
    resumed = until_done(service.resume_training(owner, cut.run_id))
    assert resumed.status == "finished", resumed.message
    assert 0 < resumed.resumed_from < resumed.total_steps  # it went on from its checkpoint


def test_teaching_from_the_chat_can_be_stopped_there_and_is_offered_for_resuming(served_app, alices_pet, tiny):
    """With another Bruno about, the messages say which one is taught, as the lists call it."""
    service, owner, pet = served_app.petdream_service, f"session:{ALICE}", alices_pet["id"]
    picture = service.draw(owner, pet, "a photo of bruno dog in a garden", seed=31)
    service.rate(owner, picture.image_id, True)
    api = client(served_app)
    namesake = add_trained_pet(service.store, owner, tiny, name="Bruno")
    label = listed_as(service, owner, pet, 1)

    try:
        teach = api.submit(pet, ALICE, api_name="/train_further")
        deadline = time.monotonic() + 120
        while not any(f"Teaching {label} with the pictures you liked. Training {label}: step" in str(update)
                      for update in teach.outputs()):
            assert time.monotonic() < deadline and not teach.done(), teach.outputs()
            time.sleep(0.2)
        api.predict(ALICE, api_name="/stop_teaching")
        teach.result(timeout=120)
    finally:
        service.delete_pet(owner, namesake.id)
    note = [update for update in teach.outputs() if isinstance(update, str)][-1]  # the last shown
    assert note.startswith(f"⏹ Stopped teaching {label} at step ")
    assert note.endswith(": resume it under Unfinished trainings on the My pet tab.")
    [run] = [r for r in service.store.resumable_runs(owner) if r.init_model_dir is not None]
    assert run.status == "cancelled" and 0 < run.metrics["step"] < run.config["steps"]


def test_a_person_deletes_a_pet_and_then_all_their_data(served_app, photo_files):
    """Deleting needs the box ticked and waits for the pet's training to end; it takes the pet's
    photos, models and pictures off the disk, and "all my data" leaves nothing of the person."""
    from petdream.evaluation import EvaluationConfig
    from petdream.store import owner_dir

    key, api, service = "f" * 40, client(served_app), served_app.petdream_service
    owner = f"session:{key}"
    assert train(served_app, key, photo_files, name="Fifi") == "✅ Fifi is ready: chat with them on the Chat tab."
    [fifi] = api.predict(key, api_name="/pets")
    service.draw(owner, fifi["id"], "a photo of fifi dog on a sofa", seed=3)
    folder = service.store.paths(owner, fifi["id"]).root
    assert (folder / "photos").is_dir() and list(folder.rglob("*.safetensors")) and (folder / "images").is_dir()

    with pytest.raises(Exception, match="Tick .Yes, delete for good. first: deleting cannot be undone"):
        api.predict(fifi["id"], False, key, api_name="/delete_pet")
    evaluating = service.evaluate(owner, fifi["id"], EvaluationConfig(prompts=("a photo of {} on a beach",),
                                                                      images_per_prompt=1, steps=2))
    next(evaluating)  # under way: its files must stay
    with pytest.raises(Exception, match="an evaluation or a Hub transfer of yours is under way: delete Fifi when"):
        api.predict(fifi["id"], True, key, api_name="/delete_pet")
    evaluating.close()
    assert folder.is_dir()
    status = api.predict(fifi["id"], True, key, api_name="/delete_pet")
    assert status == "🗑 Fifi is deleted, with their photos, models, pictures and chats."
    assert not folder.exists() and api.predict(key, api_name="/pets") == []
    with pytest.raises(Exception, match="No such pet"):
        api.predict(fifi["id"], True, key, api_name="/delete_pet")

    long = long_training(api, key, photo_files)
    [rex] = service.pets(owner)
    with pytest.raises(Exception, match="Rex is in training now: cancel the training, then delete"):
        api.predict(rex.id, True, key, api_name="/delete_pet")
    with pytest.raises(Exception, match="A training of yours is waiting or running: cancel it, then delete your data"):
        api.predict(True, key, api_name="/delete_my_data")
    api.predict(key, api_name="/cancel_training")
    assert long.result(timeout=120)[0].startswith("⏹ Cancelled at step ")

    status = api.predict(True, key, api_name="/delete_my_data")
    assert status == "🗑 All your data is deleted: pets, photos, models, pictures, ratings and chats."
    assert service.pets(owner) == [] and service.store.runs(owner) == []
    assert not owner_dir(service.data_dir, owner).exists()


def test_copies_of_pictures_handed_to_gradio_leave_the_server(served_app, photo_files, monkeypatch):
    """The data dir is never served: a picture is shown through a copy that Gradio copies into its
    cache. Ours goes an hour on, as later copies are made, or when its pet or all its owner's data is
    deleted (other pets' copies stay: another tab may be handing one to Gradio); Gradio's after a day."""
    from petdream.ui import session

    key, api, service = "k" * 40, client(served_app), served_app.petdream_service
    owner = f"session:{key}"
    for name in ("Kiki", "Lulu"):
        assert train(served_app, key, photo_files, name=name).startswith(f"✅ {name} is ready")
    kiki, lulu = service.pets(owner)
    old, kikis, lulus = (Path(session.served_copy(owner, service.draw(owner, pet.id, "a photo", seed=1).path))
                         for pet in (kiki, kiki, lulu))
    hours_ago = time.time() - session.SERVED_COPY_S - 60
    os.utime(old.parent, (hours_ago, hours_ago))
    monkeypatch.setattr(session, "_next_sweep", 0.0)  # the sweep is due
    newest = Path(session.served_copy(owner, photo_files[0]))
    assert not old.parent.exists() and kikis.is_file() and newest.read_bytes() == photo_files[0].read_bytes()
    assert session.SERVED_DIR.stat().st_mode & 0o077 == 0  # no other user of the machine can read them

    with pytest.raises(Exception, match="No such pet"):  # a delete refused removes nothing
        api.predict("no-such-pet", True, key, api_name="/delete_pet")
    assert kikis.is_file()
    api.predict(kiki.id, True, key, api_name="/delete_pet")
    assert not kikis.exists() and lulus.is_file()
    api.predict(True, key, api_name="/delete_my_data")
    assert not lulus.exists() and not newest.exists()
    frequency, age = served_app.delete_cache
    assert age <= 86400 and frequency <= age


def test_gradios_cache_is_private_and_what_a_killed_app_left_there_goes_a_day_on(served_app, tmp_path, monkeypatch):
    """Gradio's own sweep (`delete_cache`) knows only the files its process made: a killed app's copies of
    photos and pictures would stay for good, in /tmp/gradio, which every user of the machine can read."""
    from petdream.ui import session

    assert served_app.GRADIO_CACHE == os.environ["GRADIO_TEMP_DIR"] == str(session.GRADIO_CACHE_DIR)
    assert session.GRADIO_CACHE_DIR.stat().st_mode & 0o077 == 0

    cache = tmp_path / "gradio-cache"  # as a killed app left it, the next app starting over it
    monkeypatch.setattr(session, "GRADIO_CACHE_DIR", cache)
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    left = cache / "3f2a9c" / "bruno.png"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"a photo")
    session.use_own_gradio_cache()
    assert os.environ["GRADIO_TEMP_DIR"] == str(cache) and left.is_file()  # made less than a day ago: kept
    monkeypatch.setattr(session, "GRADIO_CACHE_S", -60)  # now it is a day old
    monkeypatch.setattr(session, "_next_sweep", 0.0)  # the sweep runs as pictures are shown
    session.served_copy("session:" + "k" * 40, REPO / "README.md")
    assert not left.exists() and not left.parent.exists() and cache.is_dir()

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "theirs"))  # a folder the person chose is theirs
    kept = tmp_path / "theirs" / "x" / "y.png"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"y")
    session.use_own_gradio_cache()
    session.forget_old_served_copies()
    assert kept.is_file() and os.environ["GRADIO_TEMP_DIR"] == str(tmp_path / "theirs")


def test_the_app_forgets_browser_sessions_unused_for_the_set_number_of_days(tiny, tmp_path):
    import sqlite3

    from petdream.service import PetDreamService
    from petdream.store import DB_FILE, Store, session_owner, user_owner

    idle, sam = session_owner("g" * 40), user_owner("sam")
    with Store(tmp_path) as store:
        for owner in (idle, sam):
            store.add_pet(owner, "Bruno", "dog", "bruno")
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        db.execute("UPDATE owners SET created_at = '2020-01-01T00:00:00.000+00:00', "
                   "last_active_at = '2020-01-01T00:00:00.000+00:00'")
        db.execute("UPDATE pets SET created_at = '2020-01-01T00:00:00.000+00:00'")

    settings = Settings.from_env({}, data_dir=tmp_path, profile="tiny", device="cpu")
    local = PetDreamService(settings, tiny, host_only=True)
    assert len(local.pets(idle)) == 1  # only the machine's owner uses it: their browser's pets stay
    never = PetDreamService(Settings.from_env({}, data_dir=tmp_path, profile="tiny", device="cpu",
                                              forget_sessions_after_days=0), tiny, host_only=False)
    assert len(never.pets(idle)) == 1  # 0: kept for ever
    shared = PetDreamService(settings, tiny, host_only=False)
    assert shared.pets(idle) == [] and len(shared.pets(sam)) == 1  # a login's pets are never forgotten


def test_signing_in_offers_to_move_the_pets_made_in_this_browser_to_the_account(served_app, photo_files):
    import gradio as gr

    from petdream.ui.session import move_offer

    key, service = "h" * 40, served_app.petdream_service
    assert train(served_app, key, photo_files, name="Coco") == "✅ Coco is ready: chat with them on the Chat tab."
    sam = gr.OAuthProfile({"name": "Sam", "preferred_username": "sam", "profile": "", "picture": ""})
    offer, move = move_offer(service)
    assert offer(key, None) == (gr.skip(), gr.skip())  # not signed in: nothing offered (the row stays hidden)
    row, text = offer(key, sam)
    assert row.visible is True
    assert text == "Made in this browser before you signed in: **Coco**. Move them to your account (sam)?"
    [coco] = service.pets(f"session:{key}")

    assert move(key, sam).visible is False
    assert service.pets(f"session:{key}") == [] and [p.id for p in service.pets("hf:sam")] == [coco.id]
    picture = service.draw("hf:sam", coco.id, "a photo of coco dog in the park", seed=5)  # from its new folder
    assert picture.path.is_file() and service.pet_model("hf:sam", coco.id).pet.name == "Coco"
    assert [p["id"] for p in client(served_app).predict(key, api_name="/pets")] == []
    assert offer(key, sam) == (gr.skip(), gr.skip())  # nothing left to offer


def test_signed_in_mid_training_the_page_follows_and_can_cancel_the_training_this_browser_started(
        served_app, photo_files):
    """Signing in reloads the page under the account; the training started before, in this browser,
    is still shown and can be cancelled there. Its pets move once it has ended."""
    import gradio as gr

    from petdream.ui.session import move_offer

    key, api, service = "i" * 40, client(served_app), served_app.petdream_service
    tom = gr.OAuthProfile({"name": "Tom", "preferred_username": "tom", "profile": "", "picture": ""})
    long = long_training(api, key, photo_files)
    run = service.live_training(f"session:{key}").run_id

    follow, cancel = handler(served_app, "follow_training"), handler(served_app, "cancel_training")
    assert next(follow("j" * 40, None, tom), None) is None  # the same account in another browser: not its training
    shown, text, *_ = next(follow(key, None, tom))
    assert shown == run and text.startswith("Training Rex: step ")
    offer, move = move_offer(service)
    assert offer(key, tom)[1] == ("Made in this browser before you signed in: **Rex**. Move them to your account "
                                  "(tom)? Rex is in training now (follow it on My pet): they can move once it ends.")
    with pytest.raises(gr.Error, match="your pets can move to your account once it ends"):
        move(key, tom)

    cancel(run, "j" * 40, None, tom)  # not from another browser
    assert not service.trainings.job(run).cancel_requested.is_set()
    cancel(run, key, None, tom)
    assert long.result(timeout=120)[0].startswith("⏹ Cancelled at step ")
    move(key, tom)
    assert [p.name for p in service.pets("hf:tom")] == ["Rex"] and service.pets(f"session:{key}") == []


def test_work_on_a_persons_files_waits_for_a_delete_of_theirs_and_a_delete_is_refused_during_work():
    import threading

    from petdream.service import OwnerLocks

    locks, started = OwnerLocks(), threading.Event()

    def draw():
        with locks.work("hf:sam"):
            started.set()

    with locks.change("hf:sam", "busy"):
        thread = threading.Thread(target=draw)
        thread.start()
        assert not started.wait(0.3)  # a picture does not start while the pet is being deleted
        with locks.work("hf:ann"):  # someone else's work goes on
            pass
    assert started.wait(5)
    thread.join()
    with locks.work("hf:sam"), pytest.raises(ValueError, match="busy"):
        with locks.change("hf:sam", "busy"):
            pass
    with locks.change("hf:sam", "busy"):  # once the work is done
        pass


"""PetDream in a real browser, as a new person uses it: `python app.py --profile tiny` driven
through headless Chromium (Debian's, at /usr/bin/chromium) with Playwright.

Screenshots of each stage go to test-artifacts/browser/ (a FAILED-<stage>.png and the app's log
when one fails). PETDREAM_README_SCREENSHOT=1 also writes docs/screenshot.png, the README's
picture of the Chat tab (install fonts-noto-color-emoji first so the emoji render).
"""

import contextlib
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from browser import (ARTIFACTS, VIEWPORT, data_dir_sharing_models, launched_chromium, missing_browser,
                     save_readme_screenshot, screenshot, served_app, stage)
from pet_factory import add_trained_pet

from conftest import REPO
from petdream.store import Store

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(missing_browser() is not None, reason=str(missing_browser()))]

STEPS = 20
TRAINED = "✅ Bruno is ready: chat with them on the Chat tab."
READY_FOR_NEXT = "Ready for your next pet: the photos, name and kind above are cleared."
HELPLINE = "Text HOME to 741741 to reach the Crisis Text Line."  # a line of the crisis reply
# Whether an element is in sight: on the screen, and inside the chat's own scrolled box, not above it.
IN_SIGHT = """e => { const box = e.getBoundingClientRect(), chat = e.closest(".bubble-wrap")?.getBoundingClientRect()
    ?? {top: 0}; return box.top >= Math.max(chat.top, 0) - 1 && box.bottom <= window.innerHeight; }"""
# WCAG's contrast ratio of an element's text colour (or its pseudo-element's) on white, the light theme's.
CONTRAST_ON_WHITE = """(e, pseudo) => { const [r, g, b] = getComputedStyle(e, pseudo).color.match(/\\d+/g).slice(0, 3).map(c => {
    c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
    return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05); }"""
FEELING = "I feel a bit lonely today"
# Gradio re-renders asynchronously; these bound each wait on the tiny profile on 2 busy cores.
PAGE_S, INTAKE_S, TRAIN_S, CHAT_S, EVAL_S = 60, 60, 180, 240, 240


@pytest.fixture(scope="module")
def app(tiny, data_dir, tmp_path_factory):
    """The app as a person starts it, on one data dir for the module (its models are the session's)."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # this run's screenshots only
    own_dir = data_dir_sharing_models(data_dir, tmp_path_factory.mktemp("browser-data"))
    log = ARTIFACTS / "app.log"
    with served_app(own_dir, log) as url:
        yield {"url": url, "data_dir": own_dir, "log": log}


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # every wait on the page: Gradio renders asynchronously, on busy cores
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium, app):
    """A new visitor: a fresh browser profile (so a new owner), the page loaded."""
    from playwright.sync_api import expect

    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(app["url"])
    expect(page.locator("#tiny-banner")).to_be_visible(timeout=PAGE_S * 1000)
    # The page's load event gives this browser its owner key; wait for it so what is made next is its own.
    page.wait_for_function("() => !!localStorage.getItem('petdream-browser-id')", timeout=PAGE_S * 1000)
    yield page
    context.close()


def choose(page, dropdown: str, option: str) -> None:
    """Pick an option of a gr.Dropdown the way a person does: open it, click the option."""
    from playwright.sync_api import expect

    page.locator(f"{dropdown} input[role=combobox]").click()
    page.get_by_role("option", name=option).click()
    expect(page.locator(f"{dropdown} input[role=combobox]")).to_have_value(option)


def wait_for(condition, timeout: float, what: str):
    """Poll `condition` (not the page) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)
    return result


def ratings(data_dir: Path) -> list[tuple[int, int]]:
    """(image id, liked) of every rating stored (petdream/store.py's feedback table)."""
    with contextlib.closing(sqlite3.connect(data_dir / "petdream.sqlite3")) as db:
        return db.execute("SELECT image_id, liked FROM feedback").fetchall()


def newest_image(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / "petdream.sqlite3")) as db:
        return db.execute("SELECT max(id) FROM images").fetchone()[0]


def test_a_new_person_trains_chats_rates_and_evaluates(page, app, dreambench, tiny):
    from playwright.sync_api import expect

    from petdream.ui.chat_tab import CRISIS_TITLE

    log = app["log"]
    photos = sorted((dreambench / "dog").glob("*.jpg"))
    assert len(photos) == 5

    with stage(page, "1-opened", log):
        expect(page.locator("#tiny-banner")).to_contain_text("Demo mode")
        expect(page.get_by_role("tab")).to_have_text(["My pet", "Chat", "Evaluate"])
        expect(page.locator("#preset input[type=radio]:checked")).to_have_value("tiny")

    with stage(page, "2-photos-checked", log):
        # Opened early: Gradio sets up an accordion's fields when it first opens, and under load a value
        # typed at once was seen reset to 0 (twice in a day); by the time the photos are checked it is done.
        page.get_by_text("Advanced", exact=True).click()
        expect(page.locator("#accepted")).to_be_hidden()  # no empty box under the drop zone, looking like another
        page.locator("#photos input[type=file]").set_input_files(photos)
        expect(page.locator("#intake-summary")).to_contain_text("5 photos ready for training", timeout=INTAKE_S * 1000)
        expect(page.locator("#accepted img")).to_have_count(5)
        expect(page.locator("#rejected")).to_be_hidden()  # no empty "Not used" table when all are used
        for status in ("#intake-summary", "#train-status"):  # read out by a screen reader as they change
            expect(page.locator(status)).to_have_attribute("aria-live", "polite")
        # On a phone every photo is in sight, none off the screen's edge, none a screen tall.
        page.set_viewport_size({"width": 390, "height": 844})
        for box in (photo.bounding_box() for photo in page.locator("#accepted img").all()):
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["height"] < 200, box
        page.set_viewport_size(VIEWPORT)

    with stage(page, "3-trained", log):
        page.locator("#pet-name").get_by_role("textbox").fill("Bruno")
        choose(page, "#class-noun", "dog")
        page.locator("#preset").get_by_label("quick").check()  # the Advanced fields say what each leaves to it
        expect(page.get_by_text("Steps (0: the preset's, 400)")).to_be_attached()
        page.locator("#preset").get_by_label("tiny").check()
        steps = page.get_by_label("Steps (0: the preset's, 50)")  # tiny's 50
        for _ in range(2):  # once typed again if Gradio reset it (see above; noted in the issue as a Gradio race)
            steps.fill(str(STEPS))
            steps.press("Tab")
            page.wait_for_timeout(300)
            if steps.input_value() == str(STEPS):
                break
        expect(steps).to_have_value(str(STEPS))
        expect(page.locator("#cancel-button")).to_be_disabled()  # nothing to cancel yet
        expect(page.locator("#loss-plot")).to_be_hidden()  # no empty chart before there is a training
        page.locator("#train-button").click()
        expect(page.locator("#cancel-button")).to_be_enabled()  # while it trains (loading the model alone takes seconds)
        expect(page.locator("#train-button")).to_be_disabled()
        expect(page.locator("#train-status")).to_contain_text(TRAINED, timeout=TRAIN_S * 1000)
        expect(page.locator("#train-button")).to_be_enabled()
        # Ready for the next pet: Bruno's photos and name have left the fields, and the status line says so.
        expect(page.locator("#train-status")).to_contain_text(READY_FOR_NEXT)
        expect(page.locator("#photos")).not_to_contain_text(photos[0].name)
        expect(page.locator("#accepted")).to_be_hidden()
        expect(page.locator("#pet-name").get_by_role("textbox")).to_have_value("")
        expect(page.locator("#class-noun input[role=combobox]")).to_have_value("")
        expect(page.locator("#cancel-button")).to_be_disabled()
        # It trained the steps asked for, and showed its loss and samples on the way.
        expect(page.locator("#train-progress input[type=range]")).to_have_attribute("max", str(STEPS))
        expect(page.locator("#train-progress input[type=range]")).to_have_value(str(STEPS))
        expect(page.locator("#samples img").first).to_be_visible()
        expect(page.locator("#loss-plot canvas, #loss-plot svg").first).to_be_visible()

    with stage(page, "3b-next-pets-photos", log):
        # The next pet's photos are theirs alone, not added to Bruno's.
        page.locator("#photos input[type=file]").set_input_files(sorted((dreambench / "cat").glob("*.jpg"))[:3])
        expect(page.locator("#intake-summary")).to_contain_text("3 photos ready for training", timeout=INTAKE_S * 1000)
        expect(page.locator("#accepted img")).to_have_count(3)

    with stage(page, "4-chat-answered", log):
        page.get_by_role("tab", name="Chat").click()
        expect(page.locator("#disclosure")).to_contain_text("not a person")
        # Selecting the tab lists the pets trained so far.
        expect(page.locator("#chat-pet input[role=combobox]")).to_have_value("Bruno", timeout=PAGE_S * 1000)
        choose(page, "#chat-pet", "Bruno")
        page.locator("#chat-input").get_by_role("textbox").fill(FEELING)
        page.locator("#chat-input").get_by_role("textbox").press("Enter")  # sends, as the button does
        expect(page.locator("#send-button")).to_be_disabled()  # one message answered at a time
        chatbot = page.locator("#chatbot")
        expect(chatbot.locator("[data-testid=user]")).to_have_text(FEELING)
        # The reply streams in, then the pet's picture follows it (first message: the chat model loads).
        picture = chatbot.locator("[data-testid=bot] img")
        expect(picture).to_have_count(1, timeout=CHAT_S * 1000)
        expect(picture).to_have_js_property("complete", True)
        assert picture.evaluate("img => img.naturalWidth") > 0
        reply = chatbot.locator("[data-testid=bot] .message-content").first.inner_text().strip()
        assert len(reply) > 10 and not reply.startswith("{"), f"reply: {reply!r}"
        expect(page.locator("#chat-input").get_by_role("textbox")).to_have_value("")
        expect(page.locator("#send-button")).to_be_enabled()
        expect(page.locator("#chat-input").get_by_role("textbox")).to_be_focused()  # the next message can be typed
        if os.environ.get("PETDREAM_README_SCREENSHOT"):
            page.evaluate("window.scrollTo(0, 0)")
            save_readme_screenshot(page, REPO / "docs" / "screenshot.png")

    with stage(page, "5-picture-rated", log):
        assert ratings(app["data_dir"]) == []
        image_id = newest_image(app["data_dir"])
        # Thumbs only under the picture: rating a picture teaches the pet, a text reply has nothing to teach.
        expect(chatbot.get_by_role("button", name="Like", exact=True)).to_have_count(1)
        # Gradio's Share under a chat picture would post the pet's picture to a public discussion: hidden.
        expect(chatbot.locator("button[aria-label=Share]")).to_have_count(1)
        expect(chatbot.locator("button[aria-label=Share]")).to_be_hidden()
        chatbot.get_by_role("button", name="Like", exact=True).click()
        expect(chatbot.get_by_role("button", name="Liked", exact=True)).to_have_count(1)
        stored = wait_for(lambda: ratings(app["data_dir"]), 20, "the rating to be stored")
        assert stored == [(image_id, 1)], f"ratings stored: {stored}; the chat's picture is image {image_id}"
        # A new picture of the same scene: the first one's thumb still shows it was liked.
        page.locator("#new-picture").click()
        expect(chatbot.locator("[data-testid=bot] img")).to_have_count(2, timeout=CHAT_S * 1000)
        expect(chatbot.get_by_role("button", name="Liked", exact=True)).to_have_count(1)
        expect(chatbot.get_by_role("button", name="Like", exact=True)).to_have_count(1)

    with stage(page, "6-evaluated", log):
        page.get_by_role("tab", name="Evaluate").click()
        expect(page.locator("#eval-pet input[role=combobox]")).to_have_value("Bruno", timeout=PAGE_S * 1000)
        choose(page, "#eval-pet", "Bruno")
        expect(page.locator("#eval-size")).to_contain_text("quick draws 8, full 216")  # how long, before choosing
        page.locator("#evaluate-button").click()
        expect(page.locator("#evaluate-button")).to_be_disabled()  # one evaluation at a time
        expect(page.locator("#eval-status")).to_contain_text("✅ Done", timeout=EVAL_S * 1000)
        expect(page.locator("#eval-status")).to_have_attribute("aria-live", "polite")  # said when it is done
        expect(page.locator("#evaluate-button")).to_be_enabled()
        # First, in words: whether it draws Bruno and the scene asked for (on tiny, said to mean nothing).
        expect(page.locator("#eval-status")).to_contain_text("the models have random weights, so this verdict means")
        expect(page.locator("#eval-status strong", has_text="like Bruno")).to_be_visible()
        expect(page.locator("#eval-status")).to_contain_text("CLIPScore")  # then the numbers
        metrics = page.locator("#eval-metrics")
        expect(metrics.locator("table").first).to_be_visible()
        for column in ("CLIPScore", "SSIM best", "DINO", "CLIP-I", "CLIP-T"):
            expect(metrics.locator("th", has_text=column).first).to_be_visible()
        expect(metrics).to_contain_text("a bruno dog")
        expect(metrics).not_to_contain_text("In short")  # the verdict is said once, in the status line above
        grid = page.locator("#eval-grid img")
        expect(grid).to_be_visible()
        expect(grid).to_have_js_property("complete", True)
        assert grid.evaluate("img => img.naturalWidth") > 0
        expect(page.locator("#eval-chart img")).to_be_visible()
        expect(page.locator("#eval-report")).to_contain_text(".md")
        expect(page.locator("#eval-report")).to_contain_text(".json")
        expect(page.locator("#eval-report")).to_contain_text("grid .png")  # in full; the page shows it as WebP
        page.set_viewport_size({"width": 390, "height": 844})  # on a phone the tables scroll sideways, whole:
        broken = metrics.locator("th, td").evaluate_all("""cells => cells.filter(cell => {
            const range = document.createRange(); range.selectNodeContents(cell);
            return new Set([...range.getClientRects()].map(r => Math.round(r.top))).size > 1;  // on two lines
        }).map(cell => cell.textContent)""")
        assert broken == [], f"table cells broken over lines on a phone: {broken}"
        page.set_viewport_size(VIEWPORT)

    with stage(page, "7-crisis-kept", log):
        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-consent input[type=checkbox]").check()
        page.set_viewport_size({"width": 390, "height": 844})  # on a phone
        page.wait_for_timeout(300)
        keep_label = page.locator("#chat-consent label").first
        assert keep_label.evaluate("e => e.scrollWidth <= e.clientWidth"), "Keep my conversations is cut off"
        page.locator("#chat-input").get_by_role("textbox").fill("I want to end my life")
        page.locator("#send-button").click()
        expect(chatbot.get_by_text(CRISIS_TITLE)).to_be_visible(timeout=CHAT_S * 1000)  # set apart,
        expect(page.locator("#send-button")).to_be_enabled()
        # its title in sight, on the screen and in the chat's own scrolled box, not above them, and kept there
        title = chatbot.get_by_text(CRISIS_TITLE)
        wait_for(lambda: title.evaluate(IN_SIGHT), 10, "the crisis reply's title to be scrolled into sight")
        page.wait_for_timeout(1000)  # Gradio scrolls a chat to its end 300 ms after an update
        assert title.evaluate(IN_SIGHT), "the crisis reply's title was scrolled out of sight again"
        page.set_viewport_size(VIEWPORT)
        expect(chatbot.get_by_text(HELPLINE)).to_be_visible()  # with its resources in sight,
        # one tap away on a phone: the page keeps the links' tel: and sms: addresses
        expect(chatbot.get_by_role("link", name="Text HOME to 741741")).to_have_attribute("href", "sms:741741?&body=HOME")
        expect(chatbot.get_by_role("link", name="call 988")).to_have_attribute("href", "tel:988")
        for link in ("call 988", "Text HOME to 741741"):  # the dialler in place: no blank tab left on a desktop
            expect(chatbot.get_by_role("link", name=link)).not_to_have_attribute("target", re.compile(".*"))
        expect(page.locator("#send-button")).to_be_enabled()
        # Unticking Keep would delete every kept conversation: it asks first, and saying no keeps them.
        asked = []
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        keep = page.locator("#chat-consent input[type=checkbox]")
        keep.click()
        wait_for(lambda: asked, 10, "the question before deleting the kept conversations")
        assert asked == ["Delete every conversation PetDream has kept for you, with all your pets? This cannot be "
                         "undone."]
        expect(keep).to_be_checked()  # still kept: the next visit shows them (below)

    with stage(page, "8-reloaded", log):
        # A pet newer than Bruno (made here without training): on the next visit the chat still opens on
        # Bruno, the pet this browser last chatted with, and shows the kept crisis reply as it was.
        with Store(app["data_dir"]) as store:
            owner = store._conn().execute("SELECT owner FROM pets WHERE name = 'Bruno'").fetchone()[0]
            add_trained_pet(store, owner, tiny, name="Mia", class_noun="cat")
        page.reload()
        expect(page.locator("#tiny-banner")).to_be_visible(timeout=PAGE_S * 1000)
        # The next pet's photos, added after Bruno's training, come back; Bruno's, trained on, do not.
        expect(page.locator("#intake-summary")).to_contain_text("3 photos ready for training", timeout=INTAKE_S * 1000)
        expect(page.locator("#accepted img")).to_have_count(3)
        expect(page.locator("#pet-name").get_by_role("textbox")).to_have_value("")
        page.wait_for_timeout(3000)  # the page's load has chosen the chat's pet before Chat is opened
        page.get_by_role("tab", name="Chat").click()
        expect(page.locator("#chat-pet input[role=combobox]")).to_have_value("Bruno", timeout=PAGE_S * 1000)
        expect(chatbot.locator("[data-testid=user]")).to_have_text("I want to end my life")
        expect(chatbot.get_by_text(CRISIS_TITLE)).to_be_visible()
        expect(chatbot.get_by_text(HELPLINE)).to_be_visible()
        wait_for(lambda: chatbot.get_by_text(CRISIS_TITLE).evaluate(IN_SIGHT), 10, "the kept crisis reply's title in sight")
        page.wait_for_timeout(1000)
        assert chatbot.get_by_text(CRISIS_TITLE).evaluate(IN_SIGHT), "the kept crisis reply's title scrolled away"
        # Bruno's evaluation is still there, without drawing it again.
        page.get_by_role("tab", name="Evaluate").click()
        choose(page, "#eval-pet", "Bruno")
        expect(page.locator("#eval-status")).to_contain_text("Last evaluated ")
        expect(page.locator("#eval-metrics table").first).to_be_visible()
        expect(page.locator("#eval-grid img")).to_be_visible()

    assert page.errors == [], f"errors in the page's JavaScript: {page.errors}"


def test_a_bad_upload_names_the_file_and_says_how_many_more(page, app, dreambench, tmp_path):
    from playwright.sync_api import expect

    notes = tmp_path / "notes.jpg"
    notes.write_text("These are my notes about Bruno, not a photo.\n")
    photos = sorted((dreambench / "dog").glob("*.jpg"))[:2]

    with stage(page, "bad-upload", app["log"]):
        page.locator("#photos input[type=file]").set_input_files([notes, *photos])
        summary = page.locator("#intake-summary")
        expect(summary).to_contain_text("2 usable photos: add 1 more to train", timeout=INTAKE_S * 1000)
        expect(page.locator("#accepted img")).to_have_count(2)
        # Named in words for a screen reader, not by Gradio's untranslated key ("common.upload").
        expect(page.locator("#photos").get_by_role("button", name="Upload", exact=True)).to_have_count(1)
        expect(page.locator('[aria-label^="common."], [title^="common."]')).to_have_count(0)
        row = page.locator("#rejected tbody tr", has_text="notes.jpg")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("notes.jpg is not a photo in a supported format")
        expect(row).to_contain_text("Upload the original photo file.")
        # Two thumbnails, not two thumbnails in a box of blank space; the hints readable (WCAG AA: 4.5:1).
        thumbnail = page.locator("#accepted img").first.bounding_box()["height"]
        assert page.locator("#accepted").bounding_box()["height"] < 1.5 * thumbnail
        for hint in ("Choose one, or type it", "quick: a small add-on to the model"):
            assert page.get_by_text(hint).evaluate(CONTRAST_ON_WHITE, None) >= 4.5, hint
        placeholder = page.locator("#pet-name").get_by_role("textbox").evaluate(CONTRAST_ON_WHITE, "::placeholder")
        assert placeholder >= 4.5, "the name's placeholder"
        # The whole reason can be read: some cell showing it wraps inside the table (Gradio keeps a hidden,
        # unwrapped copy of each cell for measuring).
        fits = page.locator("#rejected").evaluate("""(table, reason) => [...table.querySelectorAll('*')].some(e =>
            e.children.length === 0 && e.textContent.includes(reason) && e.scrollWidth <= e.clientWidth + 1
            && e.getBoundingClientRect().right <= table.getBoundingClientRect().right)""", "Upload the original photo file.")
        assert fits, "the reason is cut off at the table's edge; it should wrap"

    with stage(page, "bad-upload-train-refused", app["log"]):
        page.locator("#train-button").click()  # no name, no kind, too few photos: told all three at once
        refused = page.get_by_test_id("toast-body").filter(has_text="Three things to fix before training")
        expect(refused).to_be_visible()
        lines = refused.get_by_test_id("toast-text").inner_text().splitlines()
        assert lines[1:] == ["• Only 2 usable photos; DreamBooth needs at least 3. Add 1 more photo of your pet. "
                             "Not used: notes.jpg (see the reason given for each).", "• The pet needs a name.",
                             "• Say what kind of animal your pet is (the class noun: dog, cat, ...): the model learns "
                             "the pet as one of its kind, and the wrong kind draws the wrong animal."], lines
        refused.get_by_test_id("toast-close").click()
        page.locator("#pet-name").get_by_role("textbox").fill("Bruno")
        choose(page, "#class-noun", "dog")
        page.locator("#train-button").click()
        expect(page.get_by_text("DreamBooth needs at least 3").first).to_be_visible()
        expect(page.locator("#train-status")).not_to_contain_text("Training")
        # Nothing reads as a training that broke: no chart, progress or samples, no "Error" badge on them.
        for part in ("#train-progress", "#loss-plot", "#samples"):
            expect(page.locator(part)).to_be_hidden()
        expect(page.locator("#train-button")).to_be_enabled()  # ready for the photos to be fixed
        expect(page.locator("#accepted img")).to_have_count(2)  # the good photos stay
        expect(page.locator("#pet-name").get_by_role("textbox")).to_have_value("Bruno")

    with stage(page, "bad-upload-kept-on-reload", app["log"]):
        page.reload()  # a phone drops a tab left for the camera: what was chosen comes back, checked again
        expect(page.locator("#tiny-banner")).to_be_visible(timeout=PAGE_S * 1000)
        expect(page.locator("#intake-summary")).to_contain_text("2 usable photos: add 1 more", timeout=INTAKE_S * 1000)
        expect(page.locator("#accepted img")).to_have_count(2)
        expect(page.locator("#rejected tbody tr", has_text="notes.jpg")).to_have_count(1)
        expect(page.locator("#pet-name").get_by_role("textbox")).to_have_value("Bruno")
        expect(page.locator("#class-noun input[role=combobox]")).to_have_value("dog")

    with stage(page, "chat-refused-without-a-pet", app["log"]):
        page.get_by_role("tab", name="Chat").click()
        expect(page.locator("#chatbot")).to_contain_text("a new pet is trained on the My pet tab")  # empty
        page.locator("#chat-input").get_by_role("textbox").fill("hello")
        page.locator("#send-button").click()
        expect(page.get_by_text("Choose a pet first").first).to_be_visible()
        expect(page.locator("#chatbot .error")).to_have_count(0)  # the chat itself did not break
        expect(page.locator("#chat-input").get_by_role("textbox")).to_have_value("hello")
        expect(page.locator("#send-button")).to_be_enabled()
        page.locator("#new-picture").click()  # refused too, marking the button: the chat stays in sight
        expect(page.get_by_text("Send a message first").first).to_be_visible()
        expect(page.locator("#chatbot .error")).to_have_count(0)
        expect(page.locator("#new-picture")).to_be_enabled()
        # A crisis does not wait for a pet: it is answered, with the helplines.
        page.locator("#chat-input").get_by_role("textbox").fill("I want to end my life")
        page.locator("#send-button").click()
        expect(page.locator("#chatbot").get_by_text(HELPLINE)).to_be_visible()
        expect(page.locator("#chatbot").get_by_role("link", name="findahelpline.com").first).to_be_visible()
        page.get_by_role("tab", name="My pet").click()

    with stage(page, "evaluate-refused-without-a-pet", app["log"]):
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#evaluate-button").click()
        expect(page.get_by_text("Choose a trained pet first").first).to_be_visible()
        expect(page.locator("#evaluate-button")).to_be_enabled()  # back at once, to try again
        page.get_by_role("tab", name="My pet").click()

    with stage(page, "delete-refused-until-ticked", app["log"]):
        page.get_by_text("Delete", exact=True).click()
        page.locator("#delete-all-button").click()
        expect(page.get_by_text("Tick \"Yes, delete for good\" first").first).to_be_visible()
        sure = page.locator("#delete-sure")
        expect(sure.locator("input[type=checkbox]")).to_be_visible()
        expect(sure.locator(".error")).to_have_count(0)  # Gradio's "Error" badge would cover the box to tick
        sure.locator("input[type=checkbox]").check()
        page.locator("#delete-all-button").click()
        expect(page.locator("#delete-status")).to_contain_text("All your data is deleted")
        expect(page.locator("#accepted img")).to_have_count(0)  # the photos and name not yet trained on, too,
        expect(page.locator("#pet-name").get_by_role("textbox")).to_have_value("")
        page.reload()  # and the draft a reload would give back
        expect(page.locator("#tiny-banner")).to_be_visible(timeout=PAGE_S * 1000)
        page.wait_for_timeout(3000)  # the page's load is done
        expect(page.locator("#pet-name").get_by_role("textbox")).to_have_value("")
        expect(page.locator("#accepted img")).to_have_count(0)
    assert page.errors == [], f"errors in the page's JavaScript: {page.errors}"


def test_a_cancelled_training_waits_under_unfinished_and_leaves_it_once_resumed(page, app, dreambench):
    from playwright.sync_api import expect

    photos = sorted((dreambench / "dog").glob("*.jpg"))
    status, unfinished = page.locator("#train-status"), page.locator("#resumable input[role=combobox]")

    with stage(page, "unfinished-cancelled", app["log"]):
        page.get_by_text("Advanced", exact=True).click()
        page.locator("#photos input[type=file]").set_input_files(photos)
        expect(page.locator("#intake-summary")).to_contain_text("5 photos ready", timeout=INTAKE_S * 1000)
        page.locator("#pet-name").get_by_role("textbox").fill("Rex")
        choose(page, "#class-noun", "dog")
        steps = page.get_by_label("Steps (0: the preset's, 50)")  # tiny's 50
        for _ in range(2):  # typed again if Gradio reset it (see the walkthrough above)
            steps.fill("5000")
            steps.press("Tab")
            page.wait_for_timeout(300)
            if steps.input_value() == "5000":
                break
        page.locator("#train-button").click()
        expect(status).to_contain_text("Training Rex: step", timeout=TRAIN_S * 1000)
        # Reloaded mid-training, the page follows it again; its photos and name are its own now, not offered again.
        page.reload()
        expect(page.locator("#tiny-banner")).to_be_visible(timeout=PAGE_S * 1000)
        expect(status).to_contain_text("Training Rex: step", timeout=PAGE_S * 1000)
        expect(page.locator("#accepted img")).to_have_count(0)
        expect(page.locator("#pet-name").get_by_role("textbox")).to_have_value("")
        page.locator("#cancel-button").click()
        expect(status).to_contain_text("⏹ Cancelled at step", timeout=TRAIN_S * 1000)
        expect(unfinished).to_have_value(re.compile(r"^Rex: cancelled at step \d+ of 5000"))

    with stage(page, "unfinished-resumed", app["log"]):
        page.locator("#resume-button").click()
        expect(status).to_contain_text("Training Rex: step", timeout=TRAIN_S * 1000)
        expect(unfinished).to_have_value("")  # running again: no longer offered for resuming
        expect(page.locator("#resume-button")).to_be_disabled()
        page.locator("#cancel-button").click()
        expect(status).to_contain_text("⏹ Cancelled at step", timeout=TRAIN_S * 1000)
        expect(unfinished).to_have_value(re.compile(r"^Rex: cancelled at step \d+ of 5000"))

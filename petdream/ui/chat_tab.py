"""Chat: the supportive companion answers, and the person's own pet appears in a picture.

The reply streams in as the language model writes it (each sentence screened before it shows);
then the pet's model draws the scene. Pictures can be rated with the chatbot's thumbs, and the
liked ones taught back to the pet ("Teach"), which trains it further from its current weights.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import gradio as gr

from petdream.companion import Person
from petdream.companion.safety import DISCLOSURE
from petdream.service import PetDreamService
from petdream.store import NotFound
from petdream.ui.events import refusal, while_busy
from petdream.ui.session import owner_of, pet_choices, pet_dropdown, served_copy

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
KEPT_TURNS_SHOWN = 100  # of a kept conversation, the newest shown again when its pet is chosen
DRAWING = object()  # from the chat's worker: the reply is written, the picture is being drawn
CRISIS_TITLE = "🆘 You don't have to face this alone: people who can help, right now"
# A crisis reply is long: scrolled to its end as a chat is, its title and first helplines sat above a phone's
# screen. Its top is scrolled into view instead (only when it is the newest reply), clear of the chat's label
# (CSS), 400 ms after the chat's last update: Gradio scrolls a chat to its end 300 ms after each update.
SHOW_CRISIS_TITLE = """() => setTimeout(() => {
    const replies = document.querySelectorAll("#chatbot .bot-row");
    const title = replies[replies.length - 1]?.querySelector("strong");
    if (title && title.textContent.startsWith("🆘")) title.scrollIntoView({block: "start"});
}, 400)"""
# Unticking Keep deletes every kept conversation, with every pet: asked first, as Delete asks. Kept (the box
# ticked again) unless the person confirms.
CONFIRM_FORGETTING = """(keep, browserId) => [keep || !confirm(
    "Delete every conversation PetDream has kept for you, with all your pets? This cannot be undone."), browserId]"""
EMPTY_CHAT = ("Tell me how you feel, and I'll answer, then draw your pet in a scene for you (chosen under Pet above; "
              "a new pet is trained on the My pet tab).")
# The crisis reply's ways to reach help, as links a phone acts on with one tap: the dialler, a text
# already addressed (and written, for the Crisis Text Line), the directory of lines in other countries.
HELPLINE_LINKS = {
    "call or text 988": "[call 988](tel:988) or [text 988](sms:988)",  # a tap target bigger than "call"
    "Text HOME to 741741": "[Text HOME to 741741](sms:741741?&body=HOME)",  # "?&": iOS's form and Android's
    "(911 in the US)": "([911](tel:911) in the US)",
    "llama al 988": "[llama al 988](tel:988)",
    "findahelpline.com": "[findahelpline.com](https://findahelpline.com)",
}


def render(service: PetDreamService, browser_id: gr.BrowserState, chatted: gr.BrowserState) -> dict:
    """chatted: the pet id this browser last chatted with, chosen again when the page is next opened (the
    newest pet otherwise); made outside the tabs, so it is read as the page loads, not when Chat is opened."""
    with gr.Tab("Chat", id="chat") as tab:
        gr.Markdown(f"ℹ️ {with_helpline_links(DISCLOSURE)}", elem_id="disclosure")
        with gr.Row():
            pet = gr.Dropdown([], label="Pet", elem_id="chat-pet", scale=2, allow_custom_value=True)
            # What is kept either way is said too: the pictures and their thumbs are the pet's, for Teach.
            keep = gr.Checkbox(label="Keep my conversations", info="Unticked, what you write is not stored (your pet's "
                               "pictures and your thumbs are, to teach it); unticking deletes what was kept.",
                               value=False, elem_id="chat-consent", scale=3)
        with gr.Accordion("About you (optional; used only in this session)", open=False):
            with gr.Row():
                person_name = gr.Textbox(label="Your name", elem_id="person-name")
                age = gr.Textbox(label="Age", elem_id="person-age")
                occupation = gr.Textbox(label="Occupation", elem_id="person-occupation")
        # One bubble per message: each picture gets thumbs of its own (grouped, they would rate the reply).
        # No "share" button: it posts the conversation to a public Hugging Face discussion.
        chatbot = gr.Chatbot(label="PetDream", height=520, elem_id="chatbot", group_consecutive_messages=False,
                             buttons=["copy", "copy_all"], placeholder=EMPTY_CHAT)
        with gr.Row():
            message = gr.Textbox(label="How are you feeling?", placeholder="Tell me about your day...", scale=5,
                                 elem_id="chat-input")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send-button")
        with gr.Row():
            again = gr.Button("New picture", elem_id="new-picture")
            teach = gr.Button("Teach my pet with the pictures I liked", elem_id="teach-button")
            stop_teaching = gr.Button("Stop teaching", variant="stop", visible=False, elem_id="stop-teaching-button")
        note = gr.Markdown(elem_id="chat-note")
        pictures = gr.State({})  # chatbot message index -> stored image id, for the thumbs
        last_prompt = gr.State("")
        teaching = gr.State("")  # the run id of the Teach training this page shows
        shown_pet = gr.State("")  # whose conversation the chat shows ("": no pet's yet)
        # pet id -> a conversation not kept, as it was left on this page (see show_kept), in the server's memory
        # an hour at most after the last switch of pets, open page or closed
        unkept = gr.State({}, time_to_live=3600)

    def shown(history, pictures, images) -> gr.Chatbot:
        """The chat with each rated picture's thumb as it was rated (`images`: the pet's, from the store):
        a new value alone would clear them."""
        liked = {image.id: image.liked for image in images}
        verdicts = {True: "Like", False: "Dislike"}
        return gr.Chatbot(history, feedback_value=[verdicts.get(liked.get(pictures.get(i)))
                                                   for i, m in enumerate(history) if m["role"] == "assistant"])

    def show_kept(pet_id, shown_for, history, pictures, scene, unkept, browser_id, request: gr.Request,
                  profile: gr.OAuthProfile | None = None):
        """(chat, pictures, last scene, keep box, pet shown, unkept chats) on choosing a pet: its conversation,
        with its last picture's scene for New picture (another pet's would draw that pet's trigger). Kept, from
        the store; not kept, as it was left on this page (`unkept`: pet id -> its chat, held in the server's
        memory, never written). A chat with no pet's yet (a crisis answered before there was a pet) stays on
        screen."""
        owner = owner_of(browser_id, request, profile)
        keeps = service.store.chat_consent(owner) is not None
        if not keeps and not shown_for and pet_id not in (unkept or {}):
            return gr.skip(), gr.skip(), gr.skip(), keeps, pet_id, gr.skip()
        if not keeps:
            alive = {pet.id for pet in service.pets(owner)}  # a deleted pet's chat goes with it
            unkept = {pet: chat for pet, chat in {**(unkept or {}), shown_for: {
                "history": history or [], "pictures": pictures or {}, "scene": scene or ""}}.items() if pet in alive}
            left = unkept.get(pet_id, {"history": [], "pictures": {}, "scene": ""})
            images = service.store.images(owner, pet_id) if pet_id in alive else []
            return (shown(left["history"], left["pictures"], images), left["pictures"], left["scene"], keeps, pet_id,
                    unkept)
        if not pet_id:
            return shown([], {}, []), {}, "", keeps, pet_id, {}
        images = service.store.images(owner, pet_id)
        by_path = {str(image.path): image for image in images}
        history, pictures, scene = [], {}, ""
        for turn in service.store.chat_turns(owner, pet_id)[-KEPT_TURNS_SHOWN:]:
            if turn.text:  # a New picture's turn has only its picture
                history.append(_reply(turn.text, turn.crisis) if turn.role == "assistant" else
                               {"role": "user", "content": turn.text})
            if turn.image_path is not None and Path(turn.image_path).is_file():
                history.append(_picture(owner, turn.image_path))
                if str(turn.image_path) in by_path:
                    pictures[len(history) - 1] = by_path[str(turn.image_path)].id
                    scene = by_path[str(turn.image_path)].prompt
        return shown(history, pictures, images), pictures, scene, keeps, pet_id, {}

    def rated(pet_id, history, pictures, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """After a reply: the chat with its thumbs as rated (the reply's new value cleared them on the page)."""
        return shown(history, pictures, service.store.images(owner_of(browser_id, request, profile), pet_id))

    def respond(text, pet_id, name, age, occupation, history, pictures, browser_id, request: gr.Request,
                profile: gr.OAuthProfile | None = None):
        """Stream the companion's reply into the chat, then add the pet's picture."""
        owner = owner_of(browser_id, request, profile)
        if not text or not text.strip():
            raise refusal("Write a message first: say how you feel or what's on your mind.")
        history = list(history or [])
        person = Person(name or None, age or None, occupation or None)
        if not pet_id:  # a crisis is answered even so; anything else waits for a pet
            try:
                turn, _ = service.chat(owner, None, text, person=person)
            except ValueError as error:
                raise refusal(str(error)) from None
            history += [{"role": "user", "content": text}, _reply(turn.reply, crisis=True)]
            yield history, pictures, "", ""
            return
        earlier = [{"role": m["role"], "content": _text(m)} for m in history if _text(m) and not _is_notice(m)]
        # Placeholders (notices) stand in for the reply and the picture until they come: an empty bubble
        # for half a minute reads as a stuck page.
        waiting = "Thinking..." + ("" if service.has_replied else " (the first reply loads the chat model: up to a minute)")
        history += [{"role": "user", "content": text}, _notice(waiting)]
        yield history, pictures, gr.skip(), ""  # the last scene stays New picture's until this one's comes

        tokens: queue.Queue = queue.Queue()
        outcome: dict = {}

        def work():
            try:
                outcome["turn"], outcome["picture"] = service.chat(
                    owner, pet_id, text, person=person, history=earlier, on_token=tokens.put,
                    on_drawing=lambda: tokens.put(DRAWING))
            except Exception as error:  # shown to the person below; the worker must always finish
                if not isinstance(error, (NotFound, ValueError)):  # a fault, not a refusal: its own traceback
                    logger.error("Answering a chat message failed", exc_info=error)
                outcome["error"] = error
            finally:
                tokens.put(None)

        threading.Thread(target=work, daemon=True).start()
        reply_at, streamed = len(history) - 1, False
        while (piece := tokens.get()) is not None:
            if piece is DRAWING:
                history.append(_notice(f"Drawing {service.pet_label(owner, pet_id)}..."))
            else:
                history[reply_at] = {"role": "assistant", "content": history[reply_at]["content"] + piece
                                     if streamed else piece}
                streamed = True
            yield history, pictures, gr.skip(), gr.skip()
        del history[reply_at + 1:]  # the drawing's placeholder
        if "error" in outcome:
            if not streamed:  # unanswered: the message goes back in its box, to send again
                del history[reply_at - 1:]
            yield history, pictures, gr.skip(), gr.skip() if streamed else text
            error = outcome["error"]
            if isinstance(error, (NotFound, ValueError)):
                raise refusal(str(error))
            raise gr.Error(f"Something went wrong while answering: {error}", print_exception=False)  # logged in work()
        turn, picture = outcome["turn"], outcome["picture"]
        history[-1] = _reply(turn.reply, turn.safety.is_crisis)
        for notice in turn.notices:
            if notice != DISCLOSURE:  # the disclosure is always on screen above the chat
                history.append(_notice(notice))
        if picture is not None:
            history.append(_picture(owner, picture.path, picture.prompt))
            pictures = {**pictures, len(history) - 1: picture.image_id}
        yield history, pictures, turn.image_prompt, gr.skip()  # the thumbs are shown again in `rated` (below)

    def redraw(pet_id, prompt, history, pictures, browser_id, request: gr.Request,
               profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        if not pet_id or not prompt:
            raise refusal("Send a message first; then a new picture of the same scene can be drawn.")
        try:
            picture = service.draw(owner, pet_id, prompt, in_chat=True)
        except NotFound as error:
            raise refusal(str(error)) from None
        history = list(history or []) + [_picture(owner, picture.path, picture.prompt)]
        pictures = {**pictures, len(history) - 1: picture.image_id}
        return shown(history, pictures, service.store.images(owner, pet_id)), pictures

    def cleared(pet_id, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The chat's trash button clears the screen only, as a chat app's does; where the conversation is
        kept, the person is told so, and how to delete it (deleting for good takes a deliberate untick)."""
        owner = owner_of(browser_id, request, profile)
        if pet_id and service.store.chat_consent(owner) is not None and service.store.chat_turns(owner, pet_id):
            gr.Info(f"Cleared from the screen. Your conversation with {service.pet_label(owner, pet_id)} is still "
                    "kept: untick Keep my conversations to delete it.")
        return {}, ""

    def rate(pictures, browser_id, liked: gr.LikeData, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        index = liked.index[0] if isinstance(liked.index, (list, tuple)) else liked.index
        image_id = pictures.get(index) if isinstance(pictures, dict) else None
        if image_id is None:
            gr.Info("Only pictures can be rated; the ratings teach your pet what it looks like.")
            return
        verdict = liked.liked if isinstance(liked.liked, bool) else (None if not liked.liked else liked.liked == "Like")
        service.rate(owner, image_id, verdict)
        if verdict:  # a thumb alone changes nothing visible: say what it is for
            gr.Info("Liked: \"Teach my pet with the pictures I liked\" learns from it.", duration=5)

    def teach_liked(pet_id, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """(note, run id, Stop button) as the Teach training goes, until it ends; the chat keeps the
        old weights till then."""
        owner = owner_of(browser_id, request, profile)
        if not pet_id:
            raise refusal("Choose a pet first.")
        try:
            job = service.train_further(owner, pet_id)
        except (NotFound, ValueError) as error:
            raise refusal(str(error)) from None
        yield gr.skip(), job.run_id, gr.Button(visible=True)
        last = None
        while True:
            done = job.done  # read before the summary: the last line shown is then the final one
            if job.status == "cancelled":  # resuming is on the My pet tab
                line = (f"⏹ Stopped teaching {job.pet_name} at step {job.step}: resume it under Unfinished trainings "
                        "on the My pet tab.")
            elif job.status == "finished":  # the job's own line sends the person to this tab
                line = f"✅ {job.pet_name} has learned from the pictures you liked: the next pictures come from that."
            else:
                line = (f"Teaching {job.pet_name} with the pictures you liked. "
                        f"{job.summary(service.trainings.position(job.run_id))}")
            if line != last:
                last = line
                yield line, gr.skip(), gr.skip()
            if done:
                yield gr.skip(), "", gr.Button(visible=False)
                return
            time.sleep(POLL_SECONDS)

    def stop_teaching_run(run_id, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not run_id or not service.cancel_training(owner_of(browser_id, request, profile), run_id):
            gr.Info("No teaching of yours is running.")
        else:
            gr.Info("Stopping after this step; a checkpoint is kept so you can resume.")

    def consent(keep, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Keep conversations from now on, or stop and delete those kept (`CONFIRM_FORGETTING` asked first);
        the box as it now stands."""
        owner = owner_of(browser_id, request, profile)
        kept_before = service.store.chat_consent(owner) is not None
        if bool(keep) == kept_before:  # "no" to the question: the consent and its date stay as they were
            return kept_before
        service.store.set_chat_consent(owner, bool(keep))
        gr.Info("Your conversations are kept from now on, for you alone; what was said before this is not."
                if keep else "Your kept conversations are deleted, and nothing more is kept.")
        return bool(keep)

    def list_chat_pets(current, browser_id, chatted, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The person's trained pets: the chosen one stays; with none chosen yet (the page just opened), the
        one last chatted with in this browser, if it is still theirs; else the newest."""
        owner = owner_of(browser_id, request, profile)
        return pet_dropdown(pet_choices(service.pets(owner), trained_only=True), current, chatted)

    inputs = [message, pet, person_name, age, occupation, chatbot, pictures, browser_id]
    outputs = [chatbot, pictures, last_prompt, message]
    # One message answered at a time: Send and the message box rest until the reply and its picture are in
    # (New picture and the pet choice too: either would change the chat the reply is being added to.)
    answering = (lambda: (gr.Button(interactive=False), gr.Textbox(interactive=False), gr.Button(interactive=False),
                          gr.Dropdown(interactive=False)),
                 lambda: (gr.Button(interactive=True), gr.Textbox(interactive=True), gr.Button(interactive=True),
                          gr.Dropdown(interactive=True)))
    for sent, api in ((send.click, {"api_name": "chat"}), (message.submit, {"api_visibility": "private"})):
        answered = while_busy(sent, [send, message, again, pet], *answering, respond, inputs, outputs,
                              show_progress_on=message, focus="#chat-input textarea", **api)  # a refusal marks the box, not the whole chat "Error"
        # The thumbs' update redraws the chat, scrolling it to its end: a crisis reply's title comes back after it.
        answered.then(rated, [pet, chatbot, pictures, browser_id], chatbot, api_visibility="private").then(
            None, js=SHOW_CRISIS_TITLE, api_visibility="private")
        answered.then(lambda pet_id: pet_id, pet, chatted, api_visibility="private")
        answered.failure(list_chat_pets, [pet, browser_id, chatted], pet, api_visibility="private")  # one deleted?
    # Drawing rests what answering rests. A refusal marks the button, not the chat: Gradio's "Error" over the
    # chat hid it, helplines included.
    drawn = while_busy(again.click, [send, message, again, pet], *answering, redraw,
                       [pet, last_prompt, chatbot, pictures, browser_id], [chatbot, pictures], show_progress_on=again,
                       api_visibility="private")
    drawn.then(lambda pet_id: pet_id, pet, chatted, api_visibility="private")  # remembered, as after a reply
    drawn.failure(list_chat_pets, [pet, browser_id, chatted], pet, api_visibility="private")  # one deleted?
    chatbot.clear(cleared, inputs=[pet, browser_id], outputs=[pictures, last_prompt], api_visibility="private")

    chatbot.like(rate, inputs=[pictures, browser_id], api_visibility="private")
    while_busy(teach.click, [teach], lambda: gr.Button(interactive=False), lambda: gr.Button(interactive=True),
               teach_liked, [pet, browser_id], [note, teaching, stop_teaching], api_name="train_further",
               concurrency_limit=None,  # it only follows the training, which the training queue runs one at a time
               show_progress_on=teach)  # a refusal marks the button: on the note, "Error" stayed for screen readers
    stop_teaching.click(stop_teaching_run, inputs=[teaching, browser_id], api_name="stop_teaching")
    keep.input(consent, inputs=[keep, browser_id], outputs=keep, js=CONFIRM_FORGETTING,
               api_visibility="private")  # the person's click, not show_kept's
    pet.change(show_kept, inputs=[pet, shown_pet, chatbot, pictures, last_prompt, unkept, browser_id],
               outputs=[chatbot, pictures, last_prompt, keep, shown_pet, unkept], api_visibility="private").then(
        None, js=SHOW_CRISIS_TITLE, api_visibility="private")  # a kept chat that ended on one, as it was live
    tab.select(list_chat_pets, inputs=[pet, browser_id, chatted], outputs=pet, api_visibility="private").then(
        None, js=SHOW_CRISIS_TITLE, api_visibility="private")  # a hidden chat could not be scrolled
    return {"list_pets": (list_chat_pets, [pet, browser_id, chatted], [pet])}


def _reply(text: str, crisis: bool) -> dict:
    """The companion's reply as a chat message; a crisis reply set apart under a bold title, live or kept,
    in full-size text with its helplines as links (Gradio's message titles fold the text under them, small)."""
    if crisis:
        text = f"**{CRISIS_TITLE}**\n\n{with_helpline_links(text)}"
    return {"role": "assistant", "content": text}


def with_helpline_links(text: str) -> str:
    """`text` (Markdown) with its helplines as links a phone calls, texts or opens with one tap."""
    for phrase, link in HELPLINE_LINKS.items():
        text = text.replace(phrase, link)
    return text


def _picture(owner: str, path, prompt: str | None = None) -> dict:
    """A picture of `owner`'s pet as a chat message (a copy for Gradio to serve; see `served_copy`)."""
    return {"role": "assistant", "content": {"path": served_copy(owner, path), "alt_text": prompt}}


def _notice(text: str) -> dict:
    """A line from PetDream itself (not the companion's reply), in italics."""
    return {"role": "assistant", "content": f"_{text}_"}


def _text(message: dict) -> str | None:
    """A chat message's text; None for a picture. Gradio 6 hands handlers each message's content as a list
    of parts ({"type": "text", "text": ...}); the messages a handler makes itself hold a plain string."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(part.get("type") == "text" for part in content):
        return "".join(part["text"] for part in content)
    return None


def _is_notice(message: dict) -> bool:
    """Notices are not the companion's words: the LLM does not see them as its own replies."""
    text = _text(message)
    return message.get("role") == "assistant" and bool(text) and text.startswith("_") and text.endswith("_")

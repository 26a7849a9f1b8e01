"""The Gradio app: one Blocks, one module per tab. The UI only calls into PetDreamService."""

from __future__ import annotations

import gradio as gr

from petdream.models import TINY_WARNING, resolve_profile
from petdream.service import PetDreamService
from petdream.settings import Settings
from petdream.ui import api, chat_tab, evaluate_tab, train_tab
from petdream.ui.session import (GRADIO_CACHE_S, browser_id_or_new, browser_state_secret, move_offer,
                                 oauth_enabled, only_the_host_can_reach, use_own_gradio_cache)

# Per file, Gradio's cap. Above intake's own limit (photos.MAX_FILE_BYTES, 30 MB) on purpose: Gradio
# refuses a whole upload for one file over its cap, while intake refuses that one file, with its
# reason, and keeps the good photos. (A phone photo is 2-8 MB; intake takes at most 50 photos.)
MAX_UPLOAD = "100mb"

# Thumbs only under the chat's pictures: a rated picture teaches the pet, a text reply has nothing to teach
# (Gradio 6's Chatbot shows them under every reply; a text reply's row has no .component-wrap, and its first
# button is Copy). No Share under the chat's pictures either (Gradio 6 puts one under every file in a chat,
# right after its download link, whatever `buttons` says): on a Space it posts the picture of the person's pet
# to a public discussion. Matched by place, not by label: the labels are in the browser's language.
CSS = """
#chatbot .bot-row:not(:has(.component-wrap)) + .message-buttons .icon-button-wrapper > button ~ button,
#chatbot .message-buttons a.download-link + button {
    display: none;
}
.gradio-container {  /* hints and placeholders: Gradio's #bbbbc2 on white (1.9:1) was hard to read; this is 4.8:1 */
    --block-info-text-color: var(--neutral-500);
    --input-placeholder-color: var(--neutral-500);
}
.dark .gradio-container, .gradio-container.dark {  /* Gradio's own, light on dark */
    --block-info-text-color: var(--neutral-400);
    --input-placeholder-color: var(--neutral-500);
}
#accepted .grid-wrap.fixed-height, #samples .grid-wrap.fixed-height {
    min-height: 0;  /* Gradio's 320 px: two thumbnails stood in a box of blank space */
}
#rejected {
    --font-mono: var(--font);  /* sentences, not code: in Gradio's table font a file name broke mid-word */
}
#chatbot .bot-row strong {
    scroll-margin-top: 3.5rem;  /* a crisis reply's title, scrolled to the top: below the chat's label */
}
@media (max-width: 640px) {
    #chat-pet, #chat-consent {  /* one above the other: beside the pet, "Keep my conversations" was cut off */
        flex: 1 1 100% !important;
        min-width: 100% !important;
    }
    #accepted .grid-container, #samples .grid-container {
        --grid-cols: 3 !important;  /* over Gradio's inline 6 (or 4): a phone showed half the photos, off-screen */
    }
    #eval-metrics table {  /* scrolled sideways, not squeezed until "CLIPScore" broke into "CLI PSc ore" */
        display: block;
        overflow-x: auto;
    }
    #eval-metrics th, #eval-metrics td {
        white-space: nowrap;
    }
}
"""
# Run on the page as it changes. The status lines are made live regions (Gradio renders Markdown as a plain
# block): a screen reader then says "5 photos ready for training" or "Bruno is ready" when it changes, not only
# when read. The helplines' call and text links open the phone's dialler in place: Gradio opens every link in a
# new tab, which on a desktop left a blank one behind. Labels Gradio left untranslated ("common.upload", read out
# as such by a screen reader) get their word.
PAGE_JS = """
() => {
    const ids = ["intake-summary", "train-status", "hub-status", "delete-status", "chat-note", "eval-status"];
    const untranslated = /^common\\.([a-z]+)$/;
    const mark = () => {
        ids.forEach(id => document.getElementById(id)?.setAttribute("aria-live", "polite"));
        document.querySelectorAll('a[href^="tel:"][target], a[href^="sms:"][target]').forEach(
            link => link.removeAttribute("target"));
        document.querySelectorAll('[aria-label^="common."], [title^="common."]').forEach(element => {
            for (const name of ["aria-label", "title"]) {
                const key = element.getAttribute(name)?.match(untranslated)?.[1];
                if (key) element.setAttribute(name, key[0].toUpperCase() + key.slice(1));
            }
        });
    };
    mark();
    new MutationObserver(mark).observe(document.body, {childList: true, subtree: true});
}
"""
# What `launch()` needs besides where to listen. run_history off: Gradio 6 would otherwise keep every call,
# chat messages and "About you" included, in the browser, whatever the person chose under Keep.
LAUNCH_OPTIONS = {"max_file_size": MAX_UPLOAD, "css": CSS, "js": PAGE_JS, "run_history": False}


def build_app(settings: Settings, service: PetDreamService | None = None, shared: bool = False) -> gr.Blocks:
    """The whole app. Models load on first use, so the page is up in seconds.
    shared: it is also served on a public share link (`launch(share=True)`)."""
    service = service or PetDreamService(settings, resolve_profile(settings, build_models=False),
                                         host_only=only_the_host_can_reach(settings, shared))
    profile = service.profile
    use_own_gradio_cache()
    # delete_cache: Gradio's copies of uploads and of pictures shown (a deleted pet's too) go after a day
    with gr.Blocks(title="PetDream", delete_cache=(GRADIO_CACHE_S // 24, GRADIO_CACHE_S)) as app:
        with gr.Row():
            # Which profile runs, and why, is the log's (resolve_profile): a visitor cannot change it.
            gr.Markdown("# 🐾 PetDream\nYour pet, drawn by a model that learned them from your photos, "
                        "and a companion to talk to.")
            if oauth_enabled():
                gr.LoginButton()
        if profile.random_weights:
            gr.Markdown(f"⚠️ **Demo mode.** {TINY_WARNING}", elem_id="tiny-banner")
        secret = browser_state_secret(service.data_dir)
        browser_id = gr.BrowserState("", storage_key="petdream-browser-id", secret=secret)
        # Kept in the browser, as its owner key is: the server stores nothing of a chat not kept.
        chatted_pet = gr.BrowserState("", storage_key="petdream-chat-pet", secret=secret)
        # The photos, name and kind not yet trained on: a reload (a phone drops a tab left for the camera) keeps them.
        draft = gr.BrowserState({}, storage_key="petdream-draft", secret=secret)
        with gr.Row(visible=False, elem_id="move-offer") as offer_row:
            offer_text = gr.Markdown(elem_id="move-offer-text")
            move_yes = gr.Button("Move them to my account", variant="primary", scale=0, elem_id="move-yes")
            move_no = gr.Button("Not now", scale=0, elem_id="move-no")
        with gr.Tabs():
            train = train_tab.render(service, browser_id, draft, tiny=profile.random_weights)
            chat = chat_tab.render(service, browser_id, chatted_pet)
            evaluation = evaluate_tab.render(service, browser_id, tiny=profile.random_weights)
        api.register(service)

        def refreshed(event):
            """`event` followed by refreshing every list of the person's pets and trainings."""
            for fn, inputs, outputs in (train["list_resumable"], train["list_pets"], chat["list_pets"],
                                        evaluation["list_pets"]):
                event = event.then(fn, inputs, outputs, api_visibility="private")
            return event

        offer, move = move_offer(service)
        loaded = app.load(browser_id_or_new, inputs=browser_id, outputs=browser_id, api_visibility="private").then(
            offer, inputs=browser_id, outputs=[offer_row, offer_text], api_visibility="private")
        train["follow_after"](refreshed(loaded.then(*train["restore_draft"], api_visibility="private")))
        refreshed(move_yes.click(move, inputs=browser_id, outputs=offer_row, api_visibility="private"))
        move_no.click(lambda: gr.Row(visible=False), outputs=offer_row, api_visibility="private")
    app.petdream_service = service
    return app

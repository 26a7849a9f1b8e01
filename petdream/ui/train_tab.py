"""My pet: upload photos, see which are usable and why not, train, follow it live, cancel, resume,
push to or load from the Hub, delete a pet or all of one's data."""

from __future__ import annotations

import time
from datetime import datetime

import gradio as gr
import pandas as pd

from petdream.photos import MAX_PHOTOS
from petdream.service import PetDreamService, pet_labels
from petdream.store import NotFound, owner_digest
from petdream.hub import HubError, MissingPetInfo
from petdream.training import PRESETS
from petdream.ui.events import refusal, while_busy
from petdream.ui.session import (forget_served_copies, in_upload_cache, oauth_enabled, owner_of, owners_of,
                                 pet_choices, served_copy, trained_pets)

POLL_SECONDS = 0.5
# On a phone (or with Advanced open) the status line sits below the fold: a Train that seemed to do nothing.
# A second after the click (its first status is in by then) it is scrolled to the top of the screen, with the
# progress and the chart under it; left alone where it already shows high enough.
SHOW_STATUS = """() => setTimeout(() => {
    const status = document.getElementById("train-status");
    if (status && status.getBoundingClientRect().top > innerHeight * 0.6) {
        status.scrollIntoView({block: "start", behavior: "smooth"});
    }
}, 1000)"""


def render(service: PetDreamService, browser_id: gr.BrowserState, draft: gr.BrowserState, tiny: bool) -> dict:
    """The tab; `draft` keeps its photos, name and kind in the browser until they are trained on."""
    presets = ["tiny", "quick", "paper"] if tiny else ["quick", "paper"]
    with gr.Tab("My pet", id="pet") as tab:
        gr.Markdown(
            f"Upload 3 to {MAX_PHOTOS} photos of your pet: different places, angles and light, the pet clearly "
            "visible. Each file is checked (a photo, big enough, not a copy of another) and cropped to a "
            "square around what stands out in it, which should be your pet.")
        uploads = gr.File(label="Photos", file_count="multiple", file_types=["image", ".heic", ".heif"],
                          elem_id="photos")
        summary = gr.Markdown(elem_id="intake-summary")
        # Thumbnails six to a row however few (two photos fitted to the row stood 600 px tall); three on a phone.
        # Hidden while empty, as "Not used" is: an empty box under the drop zone looked like a second one.
        accepted = gr.Gallery(label="Usable photos", columns=6, fit_columns=False, height="auto", elem_id="accepted",
                              visible=False)
        rejected = gr.Dataframe(headers=["file", "why it was not used"], label="Not used", wrap=True,
                                column_widths=["25%", "75%"], visible=False, elem_id="rejected")
        with gr.Row():
            name = gr.Textbox(label="Pet name", placeholder="e.g. Bruno", elem_id="pet-name")  # not a name left over
            # No default: a cat trained as a "dog" draws a dog (and its class images are dogs).
            class_noun = gr.Dropdown(["dog", "cat", "rabbit", "bird", "hamster"], value=None, allow_custom_value=True,
                                     label="Kind of pet", info="Choose one, or type it", elem_id="class-noun")
            preset = gr.Radio(presets, value=presets[0], label="Preset", elem_id="preset",
                              info="quick: a small add-on to the model (LoRA), minutes on a GPU; paper: the "
                                   "DreamBooth paper's recipe, the whole model retrained"
                                   + ("; tiny: seconds on this CPU" if tiny else ""))
        with gr.Accordion("Advanced", open=False):
            with gr.Row():
                labels = advanced_labels(presets[0])
                method = gr.Radio(["lora", "full"], value=None, label=labels[0])
                steps = gr.Number(label=labels[1], value=0, precision=0, minimum=0)
                learning_rate = gr.Number(label=labels[2], value=0, minimum=0)
                rank = gr.Number(label=labels[3], value=0, precision=0, minimum=0)
                seed = gr.Number(label="Seed", value=0, precision=0,
                                 info="The same photos, settings and seed train the same model.")
                prior = gr.Radio(["preset", "on", "off"], value="preset", label="Prior preservation",
                                 info="Also trains on the base model's own pictures of the kind of pet, so the "
                                      "model still knows other dogs or cats, not only yours.")
        with gr.Row():
            train = gr.Button("Train", variant="primary", elem_id="train-button")
            cancel = gr.Button("Cancel", variant="stop", interactive=False, elem_id="cancel-button")
        status = gr.Markdown(elem_id="train-status")
        with gr.Column(visible=False) as live:  # shown once a training is followed: empty, it looks like one that failed
            progress = gr.Slider(0, 1, value=0, label="Progress (steps)", interactive=False, buttons=[],
                                 elem_id="train-progress")
            loss = gr.LinePlot(x="step", y="loss", title="Training loss", height=220, elem_id="loss-plot")
            samples = gr.Gallery(label="Samples as it learns", columns=4, fit_columns=False, height="auto",
                                 elem_id="samples")
        run_id = gr.State("")
        trained = gr.State(None)  # {"photos", "name"} as Train sent them: taken out of the fields once it finishes
        with gr.Accordion("Hugging Face Hub: keep your pet's model, or bring one back", open=False):
            with gr.Row():
                hub_pet = gr.Dropdown([], label="Pet to push", allow_custom_value=True, elem_id="hub-pet")
                hub_repo = gr.Textbox(label="Repo (empty: <you>/petdream-<name>)", elem_id="hub-repo")
                hub_public = gr.Checkbox(label="Public (default: private)", value=False, elem_id="hub-public")
                push = gr.Button("Push to Hub", elem_id="push-button")
            with gr.Row():
                pull_repo = gr.Textbox(label="Load a pet model by repo id", placeholder="user/petdream-bruno",
                                       elem_id="pull-repo")
                pull_name = gr.Textbox(label="Pet name (if the repo doesn't say)", elem_id="pull-name")
                pull_class = gr.Textbox(label="Kind of pet (if the repo doesn't say)", elem_id="pull-class")
                pull = gr.Button("Load from Hub", elem_id="pull-button")
            hub_status = gr.Markdown(elem_id="hub-status")
        with gr.Accordion("Unfinished trainings", open=False) as unfinished:
            resumable = gr.Dropdown([], label="Cut off by a restart, cancelled or failed", elem_id="resumable",
                                    allow_custom_value=True)
            resume = gr.Button("Resume", elem_id="resume-button")
        with gr.Accordion("Delete", open=False):
            with gr.Row():
                doomed_pet = gr.Dropdown([], label="Pet to delete", allow_custom_value=True, elem_id="delete-pet")
                sure = gr.Checkbox(label="Yes, delete for good: photos, models, pictures and chats (copies you "
                                         "pushed to the Hub stay there)", value=False, elem_id="delete-sure")
            with gr.Row():
                delete_pet = gr.Button("Delete this pet", variant="stop", elem_id="delete-pet-button")
                delete_all = gr.Button("Delete all my data", variant="stop", elem_id="delete-all-button")
            delete_status = gr.Markdown(elem_id="delete-status")

    def check(paths):
        if not paths:
            return "", [], []
        report = service.check_photos(paths)
        count = len(report.accepted)
        text = (f"**{count} photos ready for training.**" if report.enough else
                f"**{count} usable photo{'s' * (count != 1)}: add {report.missing} more to train.**")
        not_used = list(dict.fromkeys((r.file, r.reason) for r in report.rejected))  # a bad file uploaded twice: once
        return text, [(photo.image, photo.file) for photo in report.accepted], [list(row) for row in not_used]

    def save_draft(paths, pet_name, kind, trained, browser_id, request: gr.Request,
                   profile: gr.OAuthProfile | None = None):
        """The draft: the photos, name and kind in their fields, less what a training took (`trained`: what
        Train sent, while it trains or once it finished), marked as the person's: on a shared computer the
        next person's page must not get it."""
        sent = trained or {"photos": [], "name": None}
        named = pet_name != sent["name"]
        return {"owner": owner_digest(owner_of(browser_id, request, profile)),
                "photos": [path for path in paths or [] if path not in sent["photos"]],
                "name": pet_name if named else "", "kind": kind if named else None}

    def save_draft_once_training(run, paths, pet_name, kind, trained, browser_id, request: gr.Request,
                                 profile: gr.OAuthProfile | None = None):
        """The draft, once a training has what Train sent: not at the click, since a refusal may never reach
        a page that was closed meanwhile."""
        return save_draft(paths, pet_name, kind, trained, browser_id, request, profile) if run else gr.skip()

    def restore_draft(draft, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """(photos, name, kind) as the person's draft left them, as the page loads; photos Gradio has swept
        from its cache since (after a day) are gone. The draft is the browser's to change: only files of
        Gradio's own cache come back, the files Gradio would serve anyone who names them. Just signed in (the
        sign-in reloads the page), the draft this browser made before is theirs too."""
        owners = {owner_digest(owner) for owner in owners_of(browser_id, request, profile)}
        if not isinstance(draft, dict) or draft.get("owner") not in owners:
            return gr.skip(), gr.skip(), gr.skip()
        listed = draft.get("photos") if isinstance(draft.get("photos"), list) else []
        photos = [path for path in listed if isinstance(path, str) and in_upload_cache(path)]
        return photos or None, str(draft.get("name") or ""), str(draft.get("kind") or "") or None

    def start(paths, name, class_noun, preset, method, steps, learning_rate, rank, seed, prior, browser_id,
              request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Start training on the uploaded photos, then stream its progress until it ends."""
        owner = owner_of(browser_id, request, profile)
        overrides = advanced_overrides(method, steps, learning_rate, rank, seed, prior)
        try:
            job = service.start_training(owner, name or "", class_noun or "", list(paths or []), preset, **overrides)
        except ValueError as error:  # everything to fix, at once
            # It stays until closed: it says what to fix, and the status line it marks is empty before a
            # training, so nothing else would show it once a toast was gone.
            raise refusal(str(error), stays=True) from None
        pet = service.store.pet(owner, service.store.run(owner, job.run_id).pet_id)
        if job.pet_name != pet.name:  # told apart from another pet of theirs with this name
            namesakes = {other.id: other for other in service.pets(owner) if other.name == pet.name and other.id != pet.id}
            unfinished = {run.pet_id for run in service.store.resumable_runs(owner)} & namesakes.keys()
            advice = ("To teach the first one more, use Teach on the Chat tab."
                      if any(other.model_dir for other in namesakes.values()) else
                      "To go on with the first one's training instead, cancel this one and resume that one under "
                      "Unfinished trainings." if unfinished else "")  # else the first one is still training
            gr.Info(f"You already have a pet named {pet.name}: this trains another, listed as {job.pet_name}. "
                    f"{advice}".strip())
        yield from follow(owner, job.run_id)

    def ready_for_next_pet(run, trained, paths, pet_name, kind, status, browser_id, request: gr.Request,
                           profile: gr.OAuthProfile | None = None):
        """(photos, name, kind, status, what Train sent, draft) once Train's training has ended: if it finished,
        the photos it trained on are taken out of the uploader (any added since stay, for the next pet) and its
        name and kind out of their fields (unless the name was changed since), and the status line says so;
        otherwise all stays, the draft's again, so a failed or cancelled training can be trained again (Resume
        needs no upload; one that diverged cannot be resumed), and the status line says whose photos they are:
        another pet's added to them would train one pet on both."""
        job = service.training(owner_of(browser_id, request, profile), run) if run and trained else None
        if job is None or not job.done:
            return (gr.skip(),) * 6
        if job.status != "finished":
            line = f"The photos above are for {job.pet_name}: remove them (×) before adding another pet's."
            return (gr.skip(), gr.skip(), gr.skip(), f"{status}\n\n{line}" if paths else gr.skip(), None,
                    save_draft(paths, pet_name, kind, None, browser_id, request, profile))
        kept = [path for path in paths or [] if path not in trained["photos"]]
        name_cleared = pet_name == trained["name"]
        line = (f"Ready for your next pet: {'the photos, name and kind above are' if name_cleared else 'its photos are'} "
                f"cleared{'; the photos added while it trained stay' if kept else ''}.")
        cleared = ("", None) if name_cleared else (gr.skip(), gr.skip())
        return kept or None, *cleared, f"{status}\n\n{line}", gr.skip(), gr.skip()  # the fields' changes save the draft

    def resume_run(chosen, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        if not chosen:
            raise refusal("Choose an unfinished training to resume.")
        try:
            job = service.resume_training(owner, chosen)
        except (NotFound, ValueError) as error:
            raise refusal(str(error)) from None
        yield from follow(owner, job.run_id)

    def follow(owner: str, run: str):
        """(run id, status, progress, loss chart, samples) every time they change, until the run ends."""
        last, samples_shown = None, -1
        while True:
            job = service.training(owner, run)
            if job is None:
                return
            done = job.done  # read before the summary: the last state shown is then the final one
            text = job.summary(service.trainings.position(run))
            state = (job.status, job.step, text)
            if state != last or len(job.samples) != samples_shown:
                last = state
                losses = list(job.losses)  # one copy: the worker appends while this reads
                # The x axis spans the whole run: the line grows across it, and a few steps are not drawn
                # on an axis of half steps.
                chart = gr.LinePlot(pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses}),
                                    x_lim=[1, job.total_steps])
                progress_bar = gr.Slider(maximum=job.total_steps, value=job.step)
                gallery = gr.skip()  # copied and sent only when a new sample arrives, not every step
                if len(job.samples) != samples_shown:
                    samples_shown = len(job.samples)
                    gallery = [(served_copy(owner, path), caption) for path, caption in job.samples[-8:]]
                yield run, text, progress_bar, chart, gallery
            if done:
                return
            time.sleep(POLL_SECONDS)

    def shown_training(browser_id, request: gr.Request, profile: gr.OAuthProfile | None, ended_too: bool = False):
        """The person's training that is still waiting or running, or, just signed in, the one this browser
        started before; `ended_too`: else their newest that ended in this process (None if none)."""
        owners = owners_of(browser_id, request, profile)
        finders = [service.live_training, service.latest_training] if ended_too else [service.live_training]
        return next((job for find in finders for owner in owners if (job := find(owner))), None)

    def reconnect(browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """After a reload (or in another tab): follow the person's live training, or show how the last one
        ended (its status line, chart and samples), not an empty status line."""
        job = shown_training(browser_id, request, profile, ended_too=True)
        if job is not None:
            yield from follow(job.owner, job.run_id)

    def controls_for(browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The controls as they fit the training `reconnect` shows: live, ended, or none."""
        job = shown_training(browser_id, request, profile, ended_too=True)
        return controls(job is not None and not job.done, shown=True if job is not None else None)

    def stop(run, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        if not run or not any(service.cancel_training(owner, run) for owner in owners_of(browser_id, request, profile)):
            gr.Info("No training of yours is running.")
        else:
            gr.Info("Stopping after this step; a checkpoint is kept so you can resume.")

    def list_resumable(browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        names = pet_labels(service.pets(owner))
        runs = [r for r in service.store.resumable_runs(owner) if not service.training_is_live(owner, r.id)]
        choices = [(f"{names.get(r.pet_id, '?')}: {r.status} at step {r.metrics.get('step', 0)} of "
                    f"{r.config['steps']}, started {datetime.fromisoformat(r.created_at):%d %b %H:%M} UTC", r.id)
                   for r in runs]
        # The newest, ready to resume; open where there is one, so a cancelled training's Resume is in sight.
        return gr.Dropdown(choices, value=choices[-1][1] if choices else None), gr.Accordion(open=bool(choices))

    def list_all_pets(browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        return gr.Dropdown(pet_choices(service.pets(owner)), value=None)

    def delete_chosen_pet(pet_id, sure, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        if not pet_id:
            raise refusal("Choose the pet to delete.")
        if not sure:
            raise refusal("Tick \"Yes, delete for good\" first: deleting cannot be undone.")
        try:
            name = service.delete_pet(owner, pet_id)
        except (NotFound, ValueError) as error:
            raise refusal(str(error)) from None
        forget_served_copies(owner, pet_id)
        return f"🗑 {name} is deleted, with their photos, models, pictures and chats."

    def delete_my_data(sure, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None):
        owner = owner_of(browser_id, request, profile)
        if not sure:
            raise refusal("Tick \"Yes, delete for good\" first: deleting cannot be undone.")
        try:
            service.forget_owner(owner)
        except ValueError as error:
            raise refusal(str(error)) from None
        forget_served_copies(owner)
        return "🗑 All your data is deleted: pets, photos, models, pictures, ratings and chats."

    def push_pet(pet_id, repo, public, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None,
                 oauth: gr.OAuthToken | None = None):
        owner = owner_of(browser_id, request, profile)
        if not pet_id:
            raise refusal("Choose a trained pet to push.")
        if oauth_enabled() and oauth is None:  # never push visitors' pets with the Space owner's token
            raise refusal("Sign in with Hugging Face (the button at the top) to push your pet to your account.")
        try:
            result = service.push_to_hub(owner, pet_id, oauth.token if oauth else None,
                                         oauth.scope if oauth else None, repo=repo, public=bool(public))
        except (HubError, NotFound, ValueError) as error:
            raise refusal(str(error)) from None
        notes = "".join(f"\n\n{note}" for note in result.notes)
        return (f"✅ Pushed to [{result.repo_id}]({result.url}) ({'private' if result.private else 'public'}, "
                f"{len(result.files)} files).{notes}")

    def pull_pet(repo, pet_name, pet_class, browser_id, request: gr.Request, profile: gr.OAuthProfile | None = None,
                 oauth: gr.OAuthToken | None = None):
        owner = owner_of(browser_id, request, profile)
        if not repo or "/" not in repo:
            raise refusal("Give the model repo's id, like user/petdream-bruno.")
        try:
            record = service.load_from_hub(owner, repo, oauth.token if oauth else None, name=pet_name,
                                           class_noun=pet_class)
        except (HubError, MissingPetInfo, ValueError) as error:
            raise refusal(str(error)) from None
        return f"✅ {record.name} is back from {repo}: chat with them on the Chat tab."

    push.click(push_pet, inputs=[hub_pet, hub_repo, hub_public, browser_id], outputs=hub_status,
               api_visibility="private")
    pull.click(pull_pet, inputs=[pull_repo, pull_name, pull_class, browser_id], outputs=hub_status,
               api_name="load_from_hub")
    uploads.change(check, inputs=uploads, outputs=[summary, accepted, rejected], api_name="check_photos").then(
        lambda photos, table: (gr.Gallery(visible=bool(photos)), gr.Dataframe(visible=len(table) > 0)),
        [accepted, rejected], [accepted, rejected], api_visibility="private")  # neither shown empty
    inputs = [uploads, name, class_noun, preset, method, steps, learning_rate, rank, seed, prior, browser_id]
    outputs = [run_id, status, progress, loss, samples]
    refresh_resumable = (list_resumable, [browser_id], [resumable, unfinished])  # a run that just stopped is offered at once
    # One training followed at a time: Train and Resume rest while it is, and Cancel only works then. Only the
    # status line shows progress, and an error: Gradio's "Error" badge on the chart read as a broken training.
    busy, idle = (lambda: controls(True, shown=True)), (lambda: controls(False))
    refused = (lambda: controls(False, shown=False))
    training_controls = [train, cancel, resume, live]

    def following(clicked, fn, fn_inputs, api_name):
        """`clicked` runs `fn`, which follows a training to its end, with the controls resting meanwhile."""
        # run_id is emptied at the click, so following any run changes it, the run just cancelled too: a
        # resumed run then leaves Unfinished as it starts (run_id.change below), not once it ends.
        clicked(lambda: "", outputs=run_id, queue=False, api_visibility="private")
        clicked(None, js=SHOW_STATUS, api_visibility="private")
        work = while_busy(clicked, training_controls, busy, idle, fn, fn_inputs, outputs, failed=refused,
                          api_name=api_name, concurrency_limit=None, show_progress_on=status)
        work.then(*refresh_resumable, api_visibility="private")
        return work

    preset.change(lambda chosen: [gr.update(label=label) for label in advanced_labels(chosen)], preset,
                  [method, steps, learning_rate, rank], api_visibility="private")  # what each leaves to it
    trained_pet = following(train.click, start, inputs, "train")
    following(resume.click, resume_run, [resumable, browser_id], "resume_training")
    # A finished training's photos and name leave the fields, or the next pet's photos would join its photos.
    # What Train sent is noted as it is clicked: photos added while it trains are the next pet's, and stay.
    train.click(lambda paths, pet_name: {"photos": list(paths or []), "name": pet_name}, [uploads, name], trained,
                queue=False, api_visibility="private")
    trained_pet.failure(lambda: None, None, trained, api_visibility="private")  # refused: nothing was taken
    # The draft follows the fields, less what a training took: a reload mid-training must not offer its photos again.
    fields = [uploads, name, class_noun]
    for field in fields:
        field.change(save_draft, [*fields, trained, browser_id], draft, queue=False, trigger_mode="always_last",
                     api_visibility="private")
    run_id.change(save_draft_once_training, [run_id, *fields, trained, browser_id], draft, api_visibility="private")
    trained_pet.then(ready_for_next_pet, [run_id, trained, *fields, status, browser_id],
                     [*fields, status, trained, draft], api_visibility="private")
    cancel.click(stop, inputs=[run_id, browser_id], api_name="cancel_training")
    run_id.change(*refresh_resumable, api_visibility="private")  # a run being followed is no longer unfinished
    tab.select(*refresh_resumable, api_visibility="private")  # a Teach run stopped on the Chat tab, say
    list_pets = trained_pets(service)
    hub_pet.focus(list_pets, inputs=[hub_pet, browser_id], outputs=hub_pet, api_visibility="private")
    doomed_pet.focus(list_all_pets, inputs=browser_id, outputs=doomed_pet, api_visibility="private")
    refresh_doomed = (list_all_pets, browser_id, doomed_pet)
    # The tick box is unticked once a delete is done, in an event of its own: an output of an event that
    # fails gets Gradio's "Error" badge, which would cover the box the message asks to tick.
    untick = (lambda: False, None, sure)
    delete_pet.click(delete_chosen_pet, inputs=[doomed_pet, sure, browser_id], outputs=delete_status,
                     api_name="delete_pet").success(*untick, api_visibility="private").then(
        *refresh_doomed, api_visibility="private").then(*refresh_resumable, api_visibility="private")
    delete_all.click(delete_my_data, inputs=[sure, browser_id], outputs=delete_status,
                     api_name="delete_my_data").success(*untick, api_visibility="private").then(
        lambda: (None, "", None), None, [uploads, name, class_noun], api_visibility="private").then(  # the draft too
        *refresh_doomed, api_visibility="private").then(*refresh_resumable, api_visibility="private")

    def follow_after(event):
        """`event` (the page's load) followed by following the person's live training, or showing how their
        last one ended, if any; then the controls as they fit then (a Train clicked meanwhile may have started
        another)."""
        followed = event.then(controls_for, [browser_id], training_controls, api_visibility="private").then(
            reconnect, [browser_id], outputs, api_name="follow_training", concurrency_limit=None,  # streams until it ends
            show_progress_on=status)
        for after in (followed.then, followed.failure):
            after(controls_for, [browser_id], training_controls, api_visibility="private").then(
                *refresh_resumable, api_visibility="private")
        return followed

    return {"list_resumable": refresh_resumable, "list_pets": (list_pets, [hub_pet, browser_id], [hub_pet]),
            "follow_after": follow_after, "restore_draft": (restore_draft, [draft, browser_id], [uploads, name, class_noun])}


def controls(training: bool, shown: bool | None = None) -> tuple:
    """(Train, Cancel, Resume, progress column) updates: Train and Resume while no training is followed,
    Cancel while one is; the progress column shown or hidden as `shown` says, or left as it is (None)."""
    column = gr.skip() if shown is None else gr.Column(visible=shown)
    return gr.Button(interactive=not training), gr.Button(interactive=training), gr.Button(interactive=not training), column


def advanced_labels(name: str) -> tuple[str, str, str, str]:
    """The labels of the Advanced fields method, steps, learning rate and rank: each says what it leaves
    to preset `name` (left blank, or 0)."""
    preset = PRESETS[name]
    return (f"Method (default: the preset's, {preset.method})", f"Steps (0: the preset's, {preset.steps})",
            f"Learning rate (0: the preset's, {preset.learning_rate:g})", f"LoRA rank (0: the preset's, {preset.rank})")


def advanced_overrides(method, steps, learning_rate, rank, seed, prior) -> dict:
    """The Advanced fields as TrainingConfig overrides; None: the preset's. An emptied number field
    (Gradio sends None) means what 0 means: the preset's."""
    return dict(method=method or None, steps=int(steps or 0) or None, learning_rate=learning_rate or None,
                rank=int(rank or 0) or None, seed=int(seed or 0),
                prior_preservation=None if prior == "preset" else prior == "on")

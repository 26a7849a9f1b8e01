"""Draw: text to image with the base model."""

from __future__ import annotations

import gradio as gr

from petdream.generate import DEFAULT_GUIDANCE, DEFAULT_STEPS, MAX_IMAGES_PER_CALL, SCHEDULERS, Generator


def render(generator: Generator) -> None:
    with gr.Tab("Draw"):
        prompt = gr.Textbox(label="Prompt", placeholder="a photo of a dog on a sunny beach")
        with gr.Accordion("Advanced", open=False):
            negative = gr.Textbox(label="Negative prompt", placeholder="blurry, text, watermark")
            steps = gr.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Steps")
            guidance = gr.Slider(0, 15, value=DEFAULT_GUIDANCE, step=0.5, label="Guidance scale")
            scheduler = gr.Dropdown(list(SCHEDULERS), value="dpmpp", label="Sampler")
            seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)")
            count = gr.Slider(1, MAX_IMAGES_PER_CALL, value=1, step=1, label="Images")
        button = gr.Button("Draw", variant="primary")
        gallery = gr.Gallery(label="Pictures", columns=4, height="auto")
        notes = gr.Markdown()

        def draw(prompt, negative, steps, guidance, scheduler, seed, count):
            try:
                result = generator.generate(
                    prompt,
                    negative_prompt=negative or None,
                    steps=int(steps),
                    guidance_scale=float(guidance),
                    scheduler=scheduler,
                    seed=None if seed is None or seed < 0 else int(seed),
                    num_images=int(count),
                )
            except ValueError as error:
                raise gr.Error(str(error)) from None
            lines = [f"Seed {result.seed}."] + [f"⚠️ {w}" for w in result.warnings]
            return result.images, "\n\n".join(lines)

        inputs = [prompt, negative, steps, guidance, scheduler, seed, count]
        button.click(draw, inputs=inputs, outputs=[gallery, notes], api_name="generate")
        prompt.submit(draw, inputs=inputs, outputs=[gallery, notes], api_name=False)

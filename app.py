"""PetDream's entry point: `python app.py` (also what a Hugging Face Space runs)."""

import argparse
import logging
import os

# Set before Gradio is imported: it reads these at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from petdream.settings import Settings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the PetDream web app.")
    parser.add_argument("--host", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, help="port (default: 7860)")
    parser.add_argument("--share", action="store_true", help="also serve a public gradio.live link")
    Settings.add_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request is noise
    settings = Settings.from_args(args)

    from petdream.ui import LAUNCH_OPTIONS, build_app

    build_app(settings, shared=args.share).launch(server_name=settings.host, server_port=settings.port, share=args.share,
                                                  **LAUNCH_OPTIONS)


if __name__ == "__main__":
    main()

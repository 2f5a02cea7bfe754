"""`sedpa ARGS` in a child process, with an optional pause so a test can interrupt it at a known moment.

SEDPA_FAULT_PAUSE selects the moment (nothing else of sedpa is changed):
  write              inside `compress`'s atomic write: config and weights are in the temp dir, the card
                     and manifest are not; prints `@@paused write` and sleeps
  barrier:PATH       same moment, but waits until PATH exists, then carries on (two runs racing)
  checkpoint:N       in `identify-heads`, right after the checkpoint of step N is on disk
Without it this is `python -m sedpa_compress ARGS`.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _pause(tag: str) -> None:
    print(f"@@paused {tag}", flush=True)
    time.sleep(300)


def _install(spec: str) -> None:
    if spec == "write" or spec.startswith("barrier:"):
        from sedpa_compress.artifact import writer

        render = writer.render_card

        def paused_render(*args, **kwargs):
            if spec == "write":
                _pause("write")
            else:
                path = spec.split(":", 1)[1]
                print("@@at barrier", flush=True)
                while not os.path.exists(path):
                    time.sleep(0.02)
            return render(*args, **kwargs)

        writer.render_card = paused_render
    elif spec.startswith("checkpoint:"):
        from sedpa_compress.heads import train

        step = int(spec.split(":", 1)[1])
        save = train.save_checkpoint

        def paused_save(path, **kwargs):
            save(path, **kwargs)
            if kwargs["state"].step == step:
                _pause(f"checkpoint {step}")

        train.save_checkpoint = paused_save
    else:
        raise SystemExit(f"unknown SEDPA_FAULT_PAUSE {spec!r}")


if __name__ == "__main__":
    # Ctrl-C as a terminal delivers it: a test run started in the background (`make test &`, nohup) hands
    # its children SIGINT ignored, and Python then never raises KeyboardInterrupt (the SIGINT tests hung)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("SEDPA_FAULT_PAUSE"):
        _install(os.environ["SEDPA_FAULT_PAUSE"])
    from sedpa_compress.cli import main

    sys.argv = ["sedpa", *sys.argv[1:]]
    main()

"""The test as a webMUSHRA configuration (https://github.com/audiolabs/webMUSHRA, ``configs/*.yaml``).

webMUSHRA adds the hidden reference itself (from ``reference``), so our
``hidden_reference`` file is not listed among the stimuli; it builds no
anchors either (``createAnchor35/70: false``): ours are listed as stimuli, so
both tools play the same files. Copy the test folder's ``audio/`` to
``<webMUSHRA>/<prefix>audio/`` and the YAML to ``<webMUSHRA>/configs/``.
"""

from __future__ import annotations

from typing import Any

import yaml

from stemdae.listen import HIDDEN_REFERENCE


def config(manifest: dict[str, Any], *, prefix: str) -> dict[str, Any]:
    """webMUSHRA's config dict: welcome page, one ``mushra`` page per trial (in random order), finish page."""
    trials = []
    for t in manifest["trials"]:
        trials.append({
            "type": "mushra", "id": t["id"], "name": f"{t['group']} ({t['id']})",
            "content": "Rate each condition against the reference (0-100).",
            "showWaveform": True, "enableLooping": True, "randomize": True, "showConditionNames": False,
            "createAnchor35": False, "createAnchor70": False,
            "reference": prefix + t["reference"],
            "stimuli": {c: prefix + path for c, path in t["conditions"].items() if c != HIDDEN_REFERENCE},
        })
    return {
        "testname": f"stemdae listening test {manifest['name']}",
        "testId": manifest["name"],
        "bufferSize": 2048,
        "stopOnErrors": True,
        "showButtonPreviousPage": True,
        "remoteService": "service/write.php",
        "pages": [
            {"type": "generic", "id": "welcome", "name": "Welcome",
             "content": "A MUSHRA test (ITU-R BS.1534-3) of processed stems from held-out songs."},
            ["random", *trials],
            {"type": "finish", "name": "Thank you", "content": "Thank you for taking part.",
             "showResults": False, "writeResults": True},
        ],
    }


def to_yaml(manifest: dict[str, Any], *, prefix: str) -> str:
    return yaml.safe_dump(config(manifest, prefix=prefix), sort_keys=False, allow_unicode=True)

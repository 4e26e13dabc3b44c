"""Which of GEPA's small-model settings move the demo: each variant is `policyopt demo` with one
setting of ``SMALL_MODEL_SETTINGS`` changed, every result printed.

Variants (the demo's defaults are ``advice`` template and 4 proposals per reflection):
``defaults``, ``one_sample`` (proposals_per_reflection=1), ``compact`` (the earlier
feedback-lines template), ``compact_one_sample`` (the settings before this change). Each run's
JSON is kept under --out; a variant whose JSON is there is not run again.

    python benchmarks/demo_ablation.py --seeds 0 [--variants defaults,one_sample] [--budget 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS: dict[str, dict[str, object]] = {
    "defaults": {},
    "one_sample": {"proposals_per_reflection": 1},
    "compact": {"reflection_template": "compact"},
    "compact_one_sample": {"reflection_template": "compact", "proposals_per_reflection": 1},
}

# runs `policyopt demo` in a child with the small-model settings overridden
_CHILD = """
import json, sys
from policyopt.gepa.config import TEMPLATES
from policyopt.gepa.spec import SMALL_MODEL_SETTINGS
overrides = json.loads(sys.argv[1])
if "reflection_template" in overrides:
    overrides["reflection_template"] = TEMPLATES[overrides["reflection_template"]]
SMALL_MODEL_SETTINGS.update(overrides)
from policyopt.cli import app
app(sys.argv[2:])
"""


def run(variant: str, seed: int, args: argparse.Namespace) -> dict:
    """One demo run with ``variant``'s settings (a subprocess); its JSON payload."""
    path = args.out / f"{variant}_seed{seed}.json"
    if not path.exists():
        demo = ["demo", "--seed", str(seed), "--budget", str(args.budget), "--json", str(path)]
        command = [sys.executable, "-c", _CHILD, json.dumps(VARIANTS[variant]), *demo]
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        started = time.perf_counter()
        subprocess.run([*command, "--no-progress"], check=True, env=env, stdout=subprocess.DEVNULL)
        print(f"{variant} seed {seed}: {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return json.loads(path.read_text(encoding="utf-8"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/demo_ablation"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        "| variant | seed | seed prompt | optimized | val | proposal calls | proposed "
        "| optimized prompt |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        for seed in args.seeds:
            payload = run(variant, seed, args)
            acc = {r["prompt"].split(" ")[0]: r["test_accuracy"] for r in payload["rows"]}
            result = payload["result"]
            calls = sum(u["calls"] for u in result["lm_usage"].values())
            text = str(payload["rows"][1]["text"]).replace("|", "\\|").replace("\n", " ")
            print(
                f"| {variant} | {seed} | {acc['seed']:.3f} | {acc['optimized']:.3f} | "
                f"{result['best_score']:.3f} | {calls} | {result['details']['counts']['proposed']} "
                f"| `{text}` |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

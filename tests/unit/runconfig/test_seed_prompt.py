"""``initial_prompt`` in a run config takes every prompt shape the library takes (a str, named
str components, chat messages) in the natural TOML spellings, on both sides (local run and
remote job); a bad shape is one error line naming the key and the fix, from the library's own
prompt validation."""

from __future__ import annotations

from typing import Any

import pytest

from policyopt.errors import ConfigError
from policyopt.prompts import PromptShape
from policyopt.remote.config import JobConfig
from policyopt.runconfig.local import LocalConfig

JOB_HEAD = """
[policy_optimization]
algorithm = "gepa"
train_ids = ["a", "b"]
task_app = {url = "http://127.0.0.1:8001"}
budget = {max_rollouts = 10}
"""
LOCAL_HEAD = """
[policy_optimization]
algorithm = "gepa"
evaluate = "prog:evaluate"
data = {train = "train.jsonl"}
budget = {max_rollouts = 10}
"""
KINDS = pytest.mark.parametrize(
    "kind,head", [(JobConfig, JOB_HEAD), (LocalConfig, LOCAL_HEAD)], ids=["job", "local"]
)

CHAT = [
    {"role": "system", "content": "Answer the question."},
    {"role": "user", "content": "Reply with one word."},
]

#: TOML spelling (appended to the table's head) -> the prompt it means
ACCEPTED: list[tuple[str, Any]] = [
    ('initial_prompt = "Answer the question."', "Answer the question."),
    (
        'initial_prompt = {instructions = "Answer.", format = "One word."}',
        {"instructions": "Answer.", "format": "One word."},
    ),
    (
        '[policy_optimization.initial_prompt]\ninstructions = "Answer."\nformat = "One word."',
        {"instructions": "Answer.", "format": "One word."},
    ),
    (
        "initial_prompt = [\n"
        '  {role = "system", content = "Answer the question."},\n'
        '  {role = "user", content = "Reply with one word."},\n'
        "]",
        CHAT,
    ),
    (
        '[[policy_optimization.initial_prompt]]\nrole = "system"\n'
        'content = """\nAnswer the question."""\n\n'
        '[[policy_optimization.initial_prompt]]\nrole = "user"\ncontent = "Reply with one word."',
        CHAT,
    ),
    (
        "initial_prompt = [\n"
        '  {role = "developer", content = "Be brief."},\n'
        '  {role = "user", content = "Q: 2+2", name = "shot"},\n'
        '  {role = "assistant", content = "4"},\n'
        '  {role = "user", content = "Q:"},\n'
        "]",
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Q: 2+2", "name": "shot"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "Q:"},
        ],
    ),
]


@KINDS
@pytest.mark.parametrize("toml,prompt", ACCEPTED, ids=range(len(ACCEPTED)))
def test_every_prompt_shape_is_accepted_and_round_trips(
    kind: Any, head: str, toml: str, prompt: Any
) -> None:
    config = kind.from_toml(head + toml + "\n")
    assert config.initial_prompt == prompt
    assert PromptShape.of(config.initial_prompt).kind == PromptShape.of(prompt).kind
    assert kind.from_toml(config.to_toml()) == config
    assert kind.from_dict(config.to_dict()) == config


def test_chat_seed_through_overrides_and_the_prompt_alias() -> None:
    base = LocalConfig.from_toml(LOCAL_HEAD + 'initial_prompt = "x"\n')
    data = {**base.to_dict(), "overrides": {"initial_prompt": CHAT}}
    assert LocalConfig.from_dict(data).initial_prompt == CHAT
    no_seed = {k: v for k, v in base.to_dict().items() if k != "initial_prompt"}
    assert LocalConfig.from_dict({**no_seed, "prompt": CHAT}).initial_prompt == CHAT


#: a bad TOML spelling -> the one problem line (after the key) it gives
REFUSED: list[tuple[str, str]] = [
    ('initial_prompt = ""', "the seed prompt is empty; give its text"),
    ("initial_prompt = []", "The 'initial_prompt' is an empty list; a chat prompt needs"),
    (
        'initial_prompt = [{role = "bot", content = "x"}]',
        "Message 0 of the 'initial_prompt' has the role 'bot'; use one of system, user, "
        "assistant, developer.",
    ),
    (
        'initial_prompt = [{role = "system", content = "x"}, {role = "user"}]',
        "Message 1 of the 'initial_prompt' has no 'content'; add it",
    ),
    (
        'initial_prompt = [{content = "x"}]',
        "Message 0 of the 'initial_prompt' has no 'role'; add it",
    ),
    (
        'initial_prompt = [{role = "user", content = 3}]',
        "Message 0 of the 'initial_prompt' has a content of int 3; the content must be a str",
    ),
    (
        'initial_prompt = [{role = "user", content = [{type = "text", text = "x"}]}]',
        "the content must be a str (multi-part content is not supported)",
    ),
    (
        'initial_prompt = [{role = "user", content = "x", weight = 1}]',
        "Message 0 of the 'initial_prompt' has the key 'weight'; a message takes only 'role', "
        "'content' and an optional 'name'.",
    ),
    (
        'initial_prompt = [{role = "user", content = "x", name = ""}]',
        "has a 'name' of str ''; a name must be a non-empty str",
    ),
    (
        'initial_prompt = [{role = "user", content = "a"}, {role = "system", content = "b", '
        'name = "user"}]',
        "Messages 0 and 1 of the 'initial_prompt' are both named 'user'; give one of them a "
        "distinct 'name' key.",
    ),
    ('initial_prompt = ["Answer.", "Reply."]', "Message 0 of the 'initial_prompt' is str"),
    ("initial_prompt = {}", "must be a str or a non-empty dict of named str components"),
    (
        "initial_prompt = {instructions = 1}",
        "component 'instructions' is int 1. Convert every component to text.",
    ),
    ("initial_prompt = 5", "must be a str, a dict[str, str] of named components or a list of"),
]


@KINDS
@pytest.mark.parametrize("toml,line", REFUSED, ids=range(len(REFUSED)))
def test_a_bad_prompt_is_one_error_line_naming_the_key(
    kind: Any, head: str, toml: str, line: str
) -> None:
    with pytest.raises(ConfigError) as info:
        kind.from_toml(head + toml + "\n")
    header, *problems = str(info.value).splitlines()
    assert header == f"Invalid {kind.KIND}:"
    assert len(problems) == 1, problems
    assert problems[0].startswith("  policy_optimization.initial_prompt: "), problems[0]
    assert line in problems[0]


def test_the_readme_chat_seed_example_parses() -> None:
    """The TOML chat seed of the README's "Your own program" section, as printed."""
    import re
    from pathlib import Path

    readme = Path(__file__).parents[3] / "README.md"
    section = readme.read_text(encoding="utf-8").split("\n## Your own program", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    chat = [b for b in blocks if "[[policy_optimization.initial_prompt]]" in b]
    assert len(chat) == 1, "no chat-seed TOML block under '## Your own program'"
    config = LocalConfig.from_toml(LOCAL_HEAD + chat[0])
    assert config.initial_prompt == CHAT

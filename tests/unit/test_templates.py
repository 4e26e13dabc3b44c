"""Templates from configs are filled in by name only: str.format's extras are refused up front."""

from __future__ import annotations

import pytest

from policyopt import GEPA, OPRO
from policyopt.errors import ConfigError
from policyopt.gepa.config import PLACEHOLDERS, TEMPLATES
from policyopt.templates import check_template, render_template
from policyopt.testing import ScriptedLM

HOSTILE = [
    "{current} {0}",  # positional: IndexError inside a running job before
    "{current} {}",
    "{current.__class__.__mro__}",  # attribute access
    "{current[0]} {records}",  # indexing
    "{current!r} {records}",  # conversion
    "{current:>999999999} {records}",  # a gigabyte of padding
    "{current} {records} {unknown}",
    "{current} {records} {",  # a stray brace
]


@pytest.mark.parametrize("template", HOSTILE)
def test_anything_but_a_named_placeholder_is_refused(template: str) -> None:
    with pytest.raises(ValueError, match="placeholders|not a valid template"):
        check_template(template, ("current", "records"))


@pytest.mark.parametrize("template", HOSTILE)
def test_gepa_and_opro_refuse_hostile_templates_when_built(template: str) -> None:
    with pytest.raises(ConfigError, match="reflection_template"):
        GEPA(reflection_lm=ScriptedLM(lambda t: t), max_rollouts=10, reflection_template=template)
    meta = template.replace("current", "history").replace("records", "exemplars")
    with pytest.raises(ConfigError, match="meta_template"):
        OPRO(meta_lm=ScriptedLM(lambda t: t), max_rollouts=10, meta_template=meta)


def test_rendering_substitutes_names_and_keeps_literal_braces() -> None:
    values = {"current": "{0} {x.y}", "records": "r"}  # values are never formatted again
    out = render_template('{{"a": 1}} {current} / {records} {current}', values)
    assert out == '{"a": 1} {0} {x.y} / r {0} {x.y}'
    for template in TEMPLATES.values():  # the built-ins pass the check
        check_template(template, PLACEHOLDERS)

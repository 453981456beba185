#!/usr/bin/env python3
"""Renders chat templates as Hugging Face's `apply_chat_template` does (jinja2's sandboxed
environment with trim_blocks, lstrip_blocks and loop controls), for model/tests/chat_templates.rs.

Reads a JSON list of cases from stdin, each {"template", "messages", "bos_token", "eos_token"},
and writes the JSON list of rendered strings to stdout (add_generation_prompt is true).

Needs:  python3 -m pip install jinja2
"""
import json
import sys

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise ValueError(message)


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    out = []
    for case in json.load(sys.stdin):
        template = env.from_string(case["template"])
        out.append(template.render(messages=case["messages"], add_generation_prompt=True,
                                   bos_token=case["bos_token"], eos_token=case["eos_token"]))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()

"""The CLI's command classes: an option that takes one value, given twice, is a usage error (exit 2), as the API
refuses a query parameter given twice. Click keeps the last one unseen: ``--expected-version 9 --expected-version 1``
guarded against nothing it was asked to."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup


class _OptionsOnceEach:
    def make_parser(self, ctx: Any) -> Any:
        parser = super().make_parser(ctx)  # type: ignore[misc]
        parse = parser.parse_args

        def parse_once(args: list[str]) -> Any:
            opts, rest, order = parse(args=args)
            given: set[str] = set()
            for param in order:  # (each option as often as it was given)
                if param.param_type_name == "option" and not param.multiple and not param.count:
                    if param.name in given:
                        ctx.fail(f"Option '{max(param.opts, key=len)}' is given twice: give it once")
                    given.add(param.name)
            return opts, rest, order

        parser.parse_args = parse_once
        return parser


class Command(_OptionsOnceEach, TyperCommand):
    pass


class Group(_OptionsOnceEach, TyperGroup):
    pass


class Commands(typer.Typer):
    """A Typer app whose commands (and its own options) refuse an option of one value given twice."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(cls=Group, **settings)

    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **settings: Any) -> Any:
        return super().command(*args, cls=cls or Command, **settings)

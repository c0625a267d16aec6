"""``/`` and ``/profiles/{id}``: the profiles, one profile's spec, history, diff and executions, and the
commands on them (create, import, edit, revert, activate, deactivate, delete, export, replay).

Reads go to the read model (waiting, after a command, until it has applied the command's position); commands
go to the application with the console user as the actor, exactly as the REST controllers run them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote, urlencode
from uuid import UUID

import anyio.to_thread
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from ledger.api.auth import requires
from ledger.api.chat import generation_of, watch_for_departure, while_wanted
from ledger.api.commands import run_command
from ledger.api.deps import parse_uuid, refuse_nul
from ledger.values import INT64_MAX
from ledger.api.runtime import Runtime
from ledger.api.exchange import exchange_document, export_download
from ledger.api.executions import execution_found
from ledger.api.profiles import (
    loaded_target,
    shown,
    steerable,
)
from ledger.api.references import profile_not_found
from ledger.application import Outcome, ProfileLedger
from ledger.console.rendering import Problem, form_again, is_htmx, page
from ledger.console.results import shown_at_its_own_address
from ledger.console.session import command_context
from ledger.console.views import (
    bars,
    newest_events,
    diff_rows,
    form_text,
    format_labels,
    format_steering,
    optional_int,
    optional_text,
    parse_labels,
    parse_steering,
    typed_description,
)
from ledger.domainmodel import Profile
from ledger.errors import LedgerError, ValidationError
from ledger.states import ProfileState

PAGE_SIZE = 25
EXECUTIONS_SHOWN = 50
HISTORY_SHOWN = 25
T = TypeVar("T")
Form = NamedDependency[dict[str, Any]]


def runtime_of(request: Request[Any, Any, Any]) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


async def resolved(runtime: Runtime, profile_id: str) -> UUID:
    """The id of the profile a console address names (an id or a name: a read, off the event loop)."""
    return await anyio.to_thread.run_sync(runtime.ledger.resolve_profile, profile_id)


def see_other(path: str) -> Redirect:
    return Redirect(path, status_code=HTTP_303_SEE_OTHER)


async def form_of(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The ``form`` of every console handler that asks for it: the fields of the form sent."""
    return dict(await request.form())  # a field sent twice: its first value


async def run(request: Request[Any, Any, Any], reason: str | None, command: Callable[[ProfileLedger], T]) -> T:
    """Run ``command`` on the ledger as the console user, in a worker thread; wait until the read side has it."""
    runtime = runtime_of(request)
    context = command_context(request, reason)

    def work() -> T:
        outcome = run_command(context, lambda: command(runtime.ledger))
        position = getattr(outcome, "position", None)
        if position:
            runtime.progress.wait_for(position, runtime.options.consistency_timeout)
        return outcome

    return await anyio.to_thread.run_sync(work)


def version_history(reads: Any, profile_id: UUID, latest: int, newest: int | None) -> dict[str, Any]:
    """A page of the profile's history, newest first: ``HISTORY_SHOWN`` versions from ``newest`` (None: the
    latest) down (``versions``), and the versions the newer and older pages start from (None: there is none)."""
    top = min(newest or latest, latest)
    return {
        "versions": reads.version_entries(profile_id, newest=top, count=HISTORY_SHOWN),
        "history_newer": min(top + HISTORY_SHOWN, latest) if top < latest else None,
        "history_older": top - HISTORY_SHOWN if top > HISTORY_SHOWN else None,
    }


def activation_warnings(runtime: Runtime, in_force: Any) -> list[str]:
    """What the API's activate answer warns of, for the version in force: the profile targets another model, SAE or
    layer than this server serves. The page after an activation works them out again rather than taking their
    words from its address, which anyone could write into a link."""
    try:
        return runtime.check_compatibility(in_force)
    except LedgerError as error:  # it cannot be applied any more (it could when it was activated)
        return [str(error)]


def expected_versions(form: dict[str, Any]) -> dict[str, int | None]:
    """The version and revision the page showed (hidden fields): a change based on them is refused (412) when the
    profile has changed since, as the API's ``If-Match``."""
    return {name: optional_int(form.get(name), name) for name in ("expected_version", "expected_revision")}


def profile_fields(form: dict[str, Any]) -> dict[str, Any]:
    """The fields of the create and edit forms, as the application's commands take them."""
    return {
        "name": (form.get("name") or "").strip(),
        "description": typed_description(form.get("description")),
        "model_id": optional_text(form.get("model_id")),
        "sae_id": optional_text(form.get("sae_id")),
        "layer": optional_int(form.get("layer"), "layer"),
        "steering": parse_steering(form.get("steering") or ""),
        "tags": parse_labels(form.get("tags") or "", "tags"),
        "products": parse_labels(form.get("products") or "", "products"),
    }


def list_page(request: Request[Any, Any, Any], *, search: str | None = None, tag: str | None = None,
              product: str | None = None, sort: str = "name", cursor: str | None = None,
              typed: dict[str, Any] | None = None, problem: Problem | None = None) -> Template:
    """The profiles, a page of them as the filters ask (as the API lists them); with ``typed`` and ``problem``, the
    create form holds what was typed and says why it was refused."""
    reads = runtime_of(request).read_model
    refuse_nul(search=search, tag=tag, product=product)  # named as the API names them
    filters = {"search": search or "", "tag": tag or "", "product": product or "", "sort": sort}
    with reads.snapshot():  # as the API lists them: the rows and the active profile of one moment
        page_of = reads.list_profiles(
            tags=parse_labels(tag or "", "tag") or None,
            products=parse_labels(product or "", "product") or None,  # as tags: "a, b" is any of them
            search=optional_text(search),
            sort="updated_at" if sort == "updated" else "name",
            limit=PAGE_SIZE,
            cursor=cursor or None,
        )
        profiles = [shown(reads, row) for row in page_of.items]  # as the API lists them: the version in force
        active = reads.active_profile()
    return page(request, "profiles.html.j2", problem.status if problem else 200, profiles=profiles,
                next_cursor=page_of.next_cursor, first_page=cursor is None, filters=filters, active=active,
                typed=typed, problem=problem)


def profile_page(request: Request[Any, Any, Any], pid: UUID, *, history_from: int | None = None,
                 compared: tuple[int | None, int | None] = (None, None), executions_after: str | None = None,
                 activated: bool = False, typed: dict[str, Any] | None = None,
                 problem: Problem | None = None) -> Template:
    """A profile's page (the diff of ``compared`` versions, when either is given); with ``typed`` and ``problem``,
    the edit form holds what was typed and says why it was refused."""
    runtime = runtime_of(request)
    reads, ledger = runtime.read_model, runtime.ledger
    row = reads.get_profile(pid)
    if row is None:
        return deleted_page(request, pid, history_from)
    history = version_history(reads, pid, row.version, history_from)
    in_force = shown(reads, row)  # as the API and the list show it: the active profile's version in force
    comparison = None
    from_version, to_version = compared
    if from_version is not None or to_version is not None:
        comparison = ledger.diff_versions(pid, from_version=from_version, to_version=to_version or row.version)
    executions = reads.list_executions(profile_id=pid, limit=EXECUTIONS_SHOWN, cursor=executions_after or None)
    return page(
        request,
        "profile.html.j2",
        problem.status if problem else 200,
        profile=row,  # the latest version: what an edit, a revert and the history start from
        in_force=in_force,
        steering_text=format_steering(row.steering),
        bars=bars(in_force.steering),
        **history,
        comparison=comparison,
        diff_rows=diff_rows(comparison) if comparison is not None else [],
        kept_query=f"&{urlencode({'from': from_version or '', 'to': to_version or ''})}" if comparison else "",
        executions=executions.items,
        executions_next=executions.next_cursor,
        executions_paged=executions_after is not None,
        can_replay=runtime.generation is not None,
        activated=activated and row.is_active,
        warnings=activation_warnings(runtime, in_force) if activated and row.is_active else [],
        typed=typed,
        problem=problem,
    )


def deleted_page(request: Request[Any, Any, Any], pid: UUID, history_from: int | None) -> Template:
    """A deleted profile: its history stays in the log (paged as a live profile's), and it can be restored. Its
    name is the one it had when deleted, which a rename that kept the version number gave no version row."""
    runtime = runtime_of(request)
    reads = runtime.read_model
    found = runtime.ledger.find_aggregate(pid)
    if not isinstance(found, Profile):
        raise profile_not_found(pid)
    last = ProfileState.of(found)
    history = version_history(reads, pid, last.version, history_from)
    if not history["versions"]:
        raise profile_not_found(pid)
    deletion, _ = newest_events(reads, limit=1, profile_id=pid, event_type="Profile.Deleted")
    return page(
        request,
        "deleted.html.j2",
        status_code=410,
        pid=pid,
        profile=last,
        **history,
        deletion=deletion[0] if deletion else None,
    )


class ImportPage(Controller):
    """The import form's target: its own controller, as its body may be larger than other forms' (the API's
    import's limit, see ``console_routes``). Its form: the document (``file``), ``rename`` and the CSRF token."""

    path = "/"

    @post("/profiles/import", name="console:import", opt=requires("admin"))
    async def import_profile(self, request: Request[Any, Any, Any], form: Form) -> Redirect:
        document = await exchange_document(request, also=("rename", "_csrf_token"))  # read as the API reads it
        rename = form.get("rename") == "on"
        outcome: Outcome = await run(request, None, lambda ledger: ledger.import_profile(document, rename=rename))
        assert outcome.profile is not None
        return see_other(f"/profiles/{outcome.profile.id}")

    @get("/profiles/import", name="console:import-address")
    async def import_address(self) -> Redirect:
        """The import form's address, opened again: the list, where the form is."""
        return see_other("/")


class ProfilePages(Controller):
    path = "/"

    # -- the list ------------------------------------------------------------------------------------
    @get("/", name="console:profiles", sync_to_thread=True)
    def profiles(
        self,
        request: Request[Any, Any, Any],
        search: FromQuery[str | None] = None,
        tag: FromQuery[str | None] = None,
        product: FromQuery[str | None] = None,
        sort: FromQuery[Literal["name", "updated"]] = "name",  # another order is a 422, as in the API
        cursor: FromQuery[str | None] = None,
    ) -> Template:
        return list_page(request, search=search, tag=tag, product=product, sort=sort, cursor=cursor)

    @post("/profiles", name="console:create")
    async def create(self, request: Request[Any, Any, Any], form: Form) -> Redirect | Template:
        try:
            fields = profile_fields(form)
            if not fields["steering"] and form.get("from_active") == "on":
                fields["steering"] = None  # as in the API: no spec given → the active profile's spec is copied
            loaded = loaded_target(runtime_of(request))  # as in the API: the loaded model, SAE and layer if not given
            outcome: Outcome = await run(request, form.get("reason"),
                                         lambda ledger: ledger.create_profile(fields, defaults=loaded))
        except Exception as error:  # noqa: BLE001 - raised on unless typing again fixes it
            return await form_again(request, error, lambda problem: list_page(request, typed=form, problem=problem))
        assert outcome.profile is not None
        return see_other(f"/profiles/{outcome.profile.id}")

    # -- one profile ---------------------------------------------------------------------------------
    # Ids in console addresses are parsed in the handlers, not typed in the routes: Litestar parses a typed path
    # parameter while routing, where only the API's JSON error handler applies, and a browser would get JSON
    # instead of the error page (tests/console/test_self_contained.py).
    @get("/profiles/{profile_id:str}", name="console:profile", sync_to_thread=True)
    def profile(
        self,
        request: Request[Any, Any, Any],
        profile_id: FromPath[str],
        from_text: Annotated[str | None, QueryParameter(name="from")] = None,  # empty: none, as in every filter
        to_text: Annotated[str | None, QueryParameter(name="to")] = None,
        history_from: FromQuery[str | None] = None,  # the newest version the history shows
        executions_after: FromQuery[str | None] = None,
        activated: FromQuery[bool] = False,
    ) -> Template:
        pid = runtime_of(request).ledger.resolve_profile(profile_id)
        from_version, to_version = optional_int(from_text, "from", minimum=1), optional_int(to_text, "to", minimum=1)
        return profile_page(request, pid, history_from=optional_int(history_from, "history_from", minimum=1),
                            compared=(from_version, to_version), executions_after=executions_after,
                            activated=activated)

    @get("/profiles/{profile_id:str}/export", name="console:export", sync_to_thread=True)
    def export(
        self,
        request: Request[Any, Any, Any],
        profile_id: FromPath[str],
        version: Annotated[int | None, QueryParameter(ge=1, le=INT64_MAX)] = None,
    ) -> Response[Any]:
        return export_download(runtime_of(request).read_model, runtime_of(request).ledger.resolve_profile(profile_id), version)

    @get(["/profiles/{profile_id:str}/edit", "/profiles/{profile_id:str}/revert", "/profiles/{profile_id:str}/activate",
          "/profiles/{profile_id:str}/deactivate", "/profiles/{profile_id:str}/delete",
          "/profiles/{profile_id:str}/restore"], name="console:form-address")
    async def form_address(self, profile_id: FromPath[str]) -> Redirect:
        """The address a form was sent to, opened again (a reload after a refusal, a bookmark): the profile's page,
        where the form is, rather than a 405."""
        return see_other(f"/profiles/{quote(profile_id, safe='')}")

    @get("/profiles", name="console:list-form-address")
    async def list_form_address(self) -> Redirect:
        """The address of the create form, opened again: the list, where it is."""
        return see_other("/")

    @get("/executions/{execution_id:str}/replay", name="console:replay-address")
    async def replay_address(self, execution_id: FromPath[str]) -> Redirect:
        """The replay form's address, opened again: the execution's page, where the form is."""
        return see_other(f"/executions/{quote(execution_id, safe='')}")

    @post("/profiles/{profile_id:str}/edit", name="console:edit")
    async def edit(self, request: Request[Any, Any, Any], profile_id: FromPath[str],
                   form: Form) -> Redirect | Template:
        runtime = runtime_of(request)
        pid = await resolved(runtime, profile_id)
        bump = form.get("bump_version") == "on"

        def update(ledger: ProfileLedger) -> Outcome:
            current = ledger.get_profile(pid)
            shown = {"tags": format_labels(current.tags), "products": format_labels(current.products),
                     "description": current.description or ""}
            for name, text in shown.items():  # a field left as shown keeps its value exactly (commas, lines and all)
                if form_text(form.get(name)) == form_text(text):
                    fields[name] = getattr(current, name)
            return ledger.update_profile(pid, fields, bump_version=bump, steerable=steerable(runtime, fields),
                                         **expected)  # as the API does

        try:
            fields, expected = profile_fields(form), expected_versions(form)
            await run(request, form.get("reason"), update)
        except Exception as error:  # noqa: BLE001 - raised on unless typing again fixes it
            return await form_again(request, error, lambda problem: profile_page(request, pid, typed=form,
                                                                                  problem=problem))
        return see_other(f"/profiles/{pid}")

    @post("/profiles/{profile_id:str}/revert", name="console:revert")
    async def revert(self, request: Request[Any, Any, Any], profile_id: FromPath[str], form: Form) -> Redirect:
        runtime = runtime_of(request)
        pid = await resolved(runtime, profile_id)
        version = optional_int(form.get("version"), "version", minimum=1)
        if version is None:
            raise ValidationError("choose the version to revert to", field="version")

        def revert(ledger: ProfileLedger) -> Outcome:
            return ledger.revert_profile(pid, version, steerable=steerable(runtime),  # as the API does
                                         **expected_versions(form))

        await run(request, form.get("reason"), revert)
        return see_other(f"/profiles/{pid}")

    @post("/profiles/{profile_id:str}/activate", name="console:activate")
    async def activate(self, request: Request[Any, Any, Any], profile_id: FromPath[str], form: Form) -> Redirect:
        runtime = runtime_of(request)
        pid = await resolved(runtime, profile_id)
        version = optional_int(form.get("version"), "version", minimum=1)  # empty: follow the latest version

        def activate(ledger: ProfileLedger) -> Outcome:
            # refuses what the loaded model cannot run (as the API does)
            return ledger.activate_profile(pid, version=version, steerable=steerable(runtime),
                                           **expected_versions(form))  # what the page showed, or nothing (412)

        await run(request, form.get("reason"), activate)
        return see_other(f"/profiles/{pid}?activated=1")  # the page says so, with the activation's warnings

    @post("/profiles/{profile_id:str}/deactivate", name="console:deactivate")
    async def deactivate(self, request: Request[Any, Any, Any], profile_id: FromPath[str], form: Form) -> Redirect:
        pid = await resolved(runtime_of(request), profile_id)  # this profile, if it is still the active one
        await run(request, form.get("reason"), lambda ledger: ledger.deactivate_profile(only=pid))
        return see_other(f"/profiles/{pid}")

    @post("/profiles/{profile_id:str}/delete", name="console:delete", opt=requires("admin"))
    async def delete(self, request: Request[Any, Any, Any], profile_id: FromPath[str], form: Form) -> Redirect:
        pid = await resolved(runtime_of(request), profile_id)
        with_executions = form.get("delete_executions") == "on"
        await run(request, form.get("reason"), lambda ledger: ledger.delete_profile(  # not one changed since shown
            pid, delete_executions=with_executions, **expected_versions(form)))
        return see_other("/")

    @post("/profiles/{profile_id:str}/restore", name="console:restore", opt=requires("admin"))
    async def restore(self, request: Request[Any, Any, Any], profile_id: FromPath[str], form: Form) -> Redirect:
        """Bring a deleted profile back (409 when another profile holds its name now)."""
        pid = await resolved(runtime_of(request), profile_id)
        await run(request, form.get("reason"), lambda ledger: ledger.restore_profile(pid))
        return see_other(f"/profiles/{pid}")

    # -- executions ----------------------------------------------------------------------------------
    @get("/executions/{execution_id:str}", name="console:execution", sync_to_thread=True)
    def execution(self, request: Request[Any, Any, Any], execution_id: FromPath[str]) -> Template:
        runtime = runtime_of(request)
        eid = parse_uuid(execution_id, "execution_id")
        row = execution_found(runtime.read_model.get_execution(eid), eid)
        return page(request, "execution.html.j2", e=row, can_replay=runtime.generation is not None)

    @post("/executions/{execution_id:str}/replay", name="console:replay",
          middleware=[watch_for_departure])  # a browser gone: the replay stops (what ran is recorded as partial)
    async def replay(self, request: Request[Any, Any, Any], execution_id: FromPath[str]) -> Template | Redirect:
        eid = parse_uuid(execution_id, "execution_id")
        # the body read in full: only then does the watch for the browser's departure begin (htmx sends the CSRF
        # token as a header, and nothing else reads the form)
        await request.body()
        from steering.runs import must_be_generation  # (torch is imported with the model, if one is loaded)

        runtime = runtime_of(request)
        context = command_context(request)
        found = await anyio.to_thread.run_sync(lambda: runtime.read_model.get_execution(eid))
        original = execution_found(found, eid)  # not deleted with its profile
        must_be_generation(original)  # as the API refuses it: with a model loaded or not
        generation = generation_of(runtime)
        with while_wanted(request, runtime) as unwanted:
            outcome = await anyio.to_thread.run_sync(lambda: run_command(context, lambda: generation.replay(
                eid, abandoned=unwanted)))
        if is_htmx(request):  # the fragment the page swaps in
            return Template(template_name="_replay.html.j2", context={"outcome": outcome, "original": original})
        return shown_at_its_own_address(request, "replay.html.j2", outcome=outcome, original=original)

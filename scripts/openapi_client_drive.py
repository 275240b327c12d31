#!/usr/bin/env python3
"""Drives a running byok's admin API with a Python client generated from its own OpenAPI
document (openapi-python-client), and checks what comes back against the models that the
document promises: org -> team -> credential -> workload token -> one refused data-plane
call -> the org's audit (its query, verification and export) -> the credential's lifecycle,
plus the documented error model.

Run by scripts/openapi-client.sh, which generates the client package, puts it on
PYTHONPATH and starts the server:

    python openapi_client_drive.py --admin-url URL --proxy-url URL \
        --operator-token-file FILE --scratch DIR [--package byok_admin_client]

Admin-API calls go through the generated client only (AuthenticatedClient and each
operation's sync_detailed/sync); the one data-plane call uses urllib, since the proxy is
not part of that document. Prints `operations driven: N` last; exits non-zero on the
first failed check.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import urllib.error
import urllib.request
import uuid
from datetime import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

# Ids are a documented prefix followed by a ULID (Crockford base32, 26 characters).
ULID = r"[0-9A-HJKMNP-TV-Z]{26}"


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def response_json(response: Any) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        fail(f"not JSON: {response.content[:200]!r}")


def check_id(value: Any, prefix: str, what: str) -> None:
    check(
        isinstance(value, str) and re.fullmatch(prefix + ULID, value) is not None,
        f"{what}: {value!r} is not {prefix!r} followed by a ULID",
    )


class Driver:
    def __init__(self, args: argparse.Namespace) -> None:
        self.pkg = args.package
        client_mod = importlib.import_module(f"{self.pkg}.client")
        self.models = importlib.import_module(f"{self.pkg}.models")
        self.types = importlib.import_module(f"{self.pkg}.types")
        token = Path(args.operator_token_file).read_text().strip()
        # An undocumented status code raises errors.UnexpectedStatus: every answer below
        # must be one the document lists for its operation.
        self.client = client_mod.AuthenticatedClient(
            base_url=args.admin_url, token=token, raise_on_unexpected_status=True, timeout=30.0
        )
        self.stranger = client_mod.AuthenticatedClient(
            base_url=args.admin_url,
            token="byok_adm_not-a-real-token",
            raise_on_unexpected_status=True,
            timeout=30.0,
        )
        self.proxy_url = args.proxy_url.rstrip("/")
        self.scratch = Path(args.scratch)
        self.secret = ""
        self.driven: set[str] = set()

    # --- calling the generated client ---------------------------------------------------

    def operation(self, tag: str, operation_id: str) -> Any:
        """The generated module `<package>.api.<tag>.<operationId>`."""
        name = f"{self.pkg}.api.{tag}.{operation_id}"
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as err:
            fail(f"the generated client has no {name} ({err}): operationId or tag renamed?")

    def call(self, tag: str, operation_id: str, *args: Any, expect: int, client: Any = None, **kwargs: Any) -> Any:
        """`sync_detailed` of one operation; checks the status, that the body parsed into
        the documented model and gives back, through to_dict(), exactly the JSON that came
        (no field the document leaves out), and that the secret is not in it. Returns the
        parsed model."""
        module = self.operation(tag, operation_id)
        response = module.sync_detailed(*args, client=client or self.client, **kwargs)
        self.driven.add(operation_id)
        text = response.content.decode("utf-8", "replace")
        check(
            response.status_code == HTTPStatus(expect),
            f"{operation_id}: expected {expect}, got {int(response.status_code)}: {text}",
        )
        self.check_secret_absent(f"{operation_id} answer", text)
        parsed = response.parsed
        check(parsed is not None, f"{operation_id} {expect}: the client parsed nothing from {text}")
        self.check_no_undocumented_fields(operation_id, parsed)
        differences = list(self.differences(response_json(response), parsed.to_dict(), "$"))
        check(not differences, f"{operation_id}: the parsed model does not give back the answer: {differences}")
        return parsed

    def differences(self, answer: Any, model: Any, path: str) -> Any:
        """Where the answer's JSON and the parsed model's to_dict() differ: a model drops
        fields that its (closed) schema does not list, and misreads a wrong type."""
        if isinstance(answer, dict) and isinstance(model, dict):
            for key in sorted(answer.keys() | model.keys()):
                if key not in model:
                    yield f"{path}.{key}: in the answer, not in the model"
                elif key not in answer:
                    yield f"{path}.{key}: in the model, not in the answer"
                else:
                    yield from self.differences(answer[key], model[key], f"{path}.{key}")
        elif isinstance(answer, list) and isinstance(model, list):
            if len(answer) != len(model):
                yield f"{path}: {len(answer)} items in the answer, {len(model)} in the model"
            for i, (a, b) in enumerate(zip(answer, model)):
                yield from self.differences(a, b, f"{path}[{i}]")
        elif isinstance(answer, str) and isinstance(model, str) and answer != model:
            # The same instant may be written `Z` or `+00:00`.
            try:
                same = datetime.fromisoformat(answer) == datetime.fromisoformat(model)
            except ValueError:
                same = False
            if not same:
                yield f"{path}: {answer!r} in the answer, {model!r} in the model"
        elif type(answer) is not type(model) or answer != model:
            yield f"{path}: {answer!r} in the answer, {model!r} in the model"

    def check_secret_absent(self, where: str, text: str) -> None:
        if self.secret:
            check(self.secret not in text, f"{where} contains the credential's secret")

    def check_no_undocumented_fields(self, where: str, value: Any, path: str = "$") -> None:
        """The generated models keep unknown JSON fields in `additional_properties`: a field
        there is one the document does not describe (untyped objects excepted)."""
        if isinstance(value, list):
            for i, item in enumerate(value):
                self.check_no_undocumented_fields(where, item, f"{path}[{i}]")
            return
        extra = getattr(value, "additional_properties", None)
        if extra is None or not hasattr(value, "to_dict"):
            return
        if type(value).__name__ != "LifecycleResponseEventsItem":
            check(not extra, f"{where}: {path} ({type(value).__name__}) has undocumented fields {sorted(extra)}")
        for attr in getattr(type(value), "__attrs_attrs__", ()):
            if attr.name != "additional_properties":
                self.check_no_undocumented_fields(where, getattr(value, attr.name), f"{path}.{attr.name}")

    def expect_error(self, parsed: Any, code: str, where: str) -> None:
        check(
            isinstance(parsed, self.models.ErrorBody),
            f"{where}: expected an ErrorBody, got {type(parsed).__name__}",
        )
        check(isinstance(parsed.error, self.models.ErrorDetail), f"{where}: error is not an ErrorDetail")
        check(parsed.error.code == code, f"{where}: error code {parsed.error.code!r}, expected {code!r}")
        check(bool(parsed.error.message), f"{where}: empty error message")

    def step(self, message: str) -> None:
        print(f"--- {message}", flush=True)

    # --- the scenario -------------------------------------------------------------------

    def run(self) -> None:
        m = self.models
        unset = self.types.UNSET
        suffix = uuid.uuid4().hex[:8]
        org_name, team_name, cred_name = f"genclient-{suffix}", "agents", "prod-openai"

        self.step("readyz (unauthenticated)")
        health = self.call("health", "readyz", expect=200)
        check(isinstance(health, m.HealthStatus), f"readyz: {health!r}")

        self.step("an unknown admin token is refused with the documented error model")
        refused = self.call("orgs", "list_orgs", expect=401, client=self.stranger)
        self.expect_error(refused, "unauthorized", "list_orgs with an unknown token")

        self.step(f"create org {org_name} (katman-b)")
        org = self.call("orgs", "create_org", expect=201, body=m.CreateOrgRequest(name=org_name, tier=m.Tier.KATMAN_B))
        check(isinstance(org, m.Org), f"create_org: {org!r}")
        check_id(org.id, "org_", "org id")
        check(org.name == org_name, f"org name {org.name!r}")
        check(org.tier == m.Tier.KATMAN_B, f"org tier {org.tier!r}")
        check(org.state == m.OrgState.ACTIVE, f"org state {org.state!r}")
        check(org.kek_version >= 1, f"org kek_version {org.kek_version}")

        self.step("the same org again: 409 as an ErrorBody")
        again = self.call(
            "orgs", "create_org", expect=409, body=m.CreateOrgRequest(name=org_name, tier=m.Tier.KATMAN_B)
        )
        self.expect_error(again, "conflict", "create_org twice")

        self.step("an unknown org: 404 as an ErrorBody")
        missing = self.call("orgs", "get_org", f"no-such-org-{suffix}", expect=404)
        self.expect_error(missing, "not_found", "get_org of an unknown org")

        self.step("get_org by name and list_orgs (sync)")
        got = self.call("orgs", "get_org", org_name, expect=200)
        check(isinstance(got, m.Org) and got.id == org.id, f"get_org: {got!r}")
        listed = self.operation("orgs", "list_orgs").sync(client=self.client)
        self.driven.add("list_orgs")
        check(isinstance(listed, m.OrgList), f"list_orgs (sync): {listed!r}")
        self.check_no_undocumented_fields("list_orgs", listed)
        check(any(o.id == org.id for o in listed.orgs), f"list_orgs does not list {org.id}")

        self.step(f"create team {team_name}")
        team = self.call("orgs", "create_team", org_name, expect=201, body=m.CreateTeamRequest(name=team_name))
        check(isinstance(team, m.Team), f"create_team: {team!r}")
        check_id(team.id, "team_", "team id")
        check(team.name == team_name and team.org_id == org.id, f"team: {team!r}")
        teams = self.call("orgs", "list_teams", org_name, expect=200)
        check([t.id for t in teams.teams] == [team.id], f"list_teams: {teams!r}")

        self.step(f"create credential {cred_name} (openai, secret read from a file)")
        secret_file = self.scratch / "openai.key"
        secret_file.write_text("sk-generated-client-0123456789\n")
        secret_file.chmod(0o600)
        self.secret = secret_file.read_text().strip()
        check(len(self.secret.encode()) >= 16, "the secret must be at least 16 bytes")
        # Bound to gpt-4o-mini: the gpt-4o call below is refused before any upstream.
        cred = self.call(
            "credentials",
            "create_credential",
            org_name,
            expect=201,
            body=m.CreateCredentialRequest(
                name=cred_name,
                provider=m.ProviderId.OPENAI,
                secret=self.secret,
                scope=m.ScopeInput(teams=[team_name], model_families=["gpt-4o-mini"]),
            ),
        )
        check(isinstance(cred, m.Credential), f"create_credential: {cred!r}")
        check_id(cred.id, "cred_", "credential id")
        check(cred.org_id == org.id and cred.name == cred_name, f"credential: {cred!r}")
        check(cred.provider == m.ProviderId.OPENAI, f"credential provider {cred.provider!r}")
        check(cred.state == m.CredentialState.ACTIVE, f"credential state {cred.state!r}")
        check(cred.version == 1, f"credential version {cred.version}")
        check(cred.scope.teams == [team.id], f"credential scope teams {cred.scope.teams!r} (want the team's id)")
        check(cred.scope.model_families == ["gpt-4o-mini"], f"scope model families {cred.scope.model_families!r}")
        check(bool(cred.fingerprint) and self.secret not in cred.fingerprint, f"fingerprint {cred.fingerprint!r}")

        self.step("the same credential name again: 409 as an ErrorBody")
        dup = self.call(
            "credentials",
            "create_credential",
            org_name,
            expect=409,
            body=m.CreateCredentialRequest(name=cred_name, provider=m.ProviderId.OPENAI, secret=self.secret),
        )
        self.expect_error(dup, "conflict", "create_credential twice")

        self.step("get_credential and list_credentials")
        detail = self.call("credentials", "get_credential", org_name, cred_name, expect=200)
        check(isinstance(detail, m.CredentialDetail) and detail.id == cred.id, f"get_credential: {detail!r}")
        check(len(detail.versions) == 1, f"credential versions: {detail.versions!r}")
        check(detail.versions[0].fingerprint == cred.fingerprint, f"version 1: {detail.versions[0]!r}")
        creds = self.call("credentials", "list_credentials", org_name, expect=200)
        check([c.id for c in creds.credentials] == [cred.id], f"list_credentials: {creds!r}")

        self.step("create a workload token for the team")
        issued = self.call("tokens", "create_token", org_name, expect=201, body=m.CreateTokenRequest(team=team_name))
        check(isinstance(issued, m.IssuedTokenResponse), f"create_token: {issued!r}")
        check_id(issued.id, "tok_", "workload token id")
        check(issued.org_id == org.id and issued.team_id == team.id, f"token: {issued!r}")
        check(issued.token.startswith("byok_"), "token text does not start with byok_")
        check(issued.workflows == [], f"token workflows {issued.workflows!r}")
        tokens = self.call("tokens", "list_tokens", org_name, expect=200)
        check([t.id for t in tokens.tokens] == [issued.id], f"list_tokens: {tokens!r}")
        check(issued.token not in json.dumps(tokens.to_dict(), default=str), "list_tokens shows the token text")

        self.step("one data-plane call outside the credential's scope (refused, no upstream)")
        call_id = f"genclient-{uuid.uuid4()}"
        status, body = self.refused_chat_completion(issued.token, call_id)
        check(status == 403, f"proxy: expected 403 for gpt-4o, got {status}: {body}")
        self.check_secret_absent("proxy answer", body)
        error = json.loads(body).get("error", {})
        check(error.get("code") == "scope_denied", f"proxy error: {body}")

        self.step("query the org's audit")
        page = self.call("audit", "query_audit", org_name, expect=200)
        check(isinstance(page, m.AuditPage), f"query_audit: {page!r}")
        check(isinstance(page.next_after_seq, (type(None), type(unset))), f"one page expected: {page.next_after_seq!r}")
        rows = [r for r in page.rows if r.call_id == call_id]
        check(len(rows) == 1, f"audit rows for {call_id}: {len(rows)} of {len(page.rows)}")
        row = rows[0]
        check(isinstance(row, m.AuditRow) and row.seq >= 1, f"audit row: {row!r}")
        check(row.outcome == m.Outcome.DENIED and row.reason == "scope_denied", f"audit outcome: {row!r}")
        check(row.org_id == org.id and row.team_id == team.id and row.token_id == issued.id, f"audit ids: {row!r}")
        check(row.credential_id == cred.id and row.credential_version == 1, f"audit credential: {row!r}")
        check(row.fingerprint == cred.fingerprint, f"audit fingerprint {row.fingerprint!r}")
        check(row.provider == m.ProviderId.OPENAI and row.model == "gpt-4o", f"audit call: {row!r}")
        check(row.tier == m.Tier.KATMAN_B, f"audit tier {row.tier!r}")
        check(isinstance(row.detail, str) and "gpt-4o-mini" in row.detail, f"audit detail {row.detail!r}")
        filtered = self.call("audit", "query_audit", org_name, expect=200, call_id=call_id, outcome=m.Outcome.DENIED)
        check([r.seq for r in filtered.rows] == [row.seq], f"query_audit by call_id: {filtered!r}")

        self.step("verify the org's audit chains")
        report = self.call("audit", "verify_audit", org_name, expect=200)
        check(isinstance(report, m.VerifyReport) and report.ok and report.checked >= 1, f"verify_audit: {report!r}")

        self.step("export the org's audit (JSON Lines that verify on their own)")
        module = self.operation("audit", "export_audit")
        response = module.sync_detailed(org_name, client=self.client)
        self.driven.add("export_audit")
        text = response.content.decode("utf-8", "replace")
        check(
            response.status_code == HTTPStatus.OK,
            f"export_audit: expected 200, got {int(response.status_code)}: {text}",
        )
        content_type = response.headers.get("content-type", "")
        check(content_type.startswith("application/x-ndjson"), f"export_audit content-type {content_type!r}")
        self.check_secret_absent("export_audit answer", text)
        check(text.endswith("\n"), f"export_audit: the last line has no line break: {text[-200:]!r}")
        lines = [json.loads(line) for line in text.splitlines()]
        header, end = lines[0], lines[-1]
        check(
            header.get("kind") == "header"
            and header.get("format") == "byok-audit-export"
            and header.get("version") == 1
            and header.get("org_id") == org.id,
            f"export_audit header: {header}",
        )
        check(end.get("kind") == "end" and end.get("lines") == len(lines) - 1, f"export_audit end line: {end}")
        exported = [line for line in lines if line.get("kind") == "call" and line.get("call_id") == call_id]
        check(len(exported) == 1, f"export_audit has {len(exported)} lines for {call_id}")
        call = exported[0]
        check(call.get("seq") == row.seq and call.get("outcome") == "denied", f"export_audit call: {call}")
        check(
            all(isinstance(call.get(field), str) for field in ("segment", "prev_hash", "hash"))
            and isinstance(call.get("segment_seq"), int),
            f"export_audit call without its chain fields: {call}",
        )
        created_events = [line for line in lines if line.get("kind") == "lifecycle" and line.get("event") == "created"]
        check(len(created_events) == 1, f"export_audit has {len(created_events)} `created` events")

        self.step("the credential's lifecycle")
        life = self.call("credentials", "credential_lifecycle", org_name, cred_name, expect=200)
        check(isinstance(life, m.LifecycleResponse), f"credential_lifecycle: {life!r}")
        check(life.credential.id == cred.id, f"lifecycle credential: {life.credential!r}")
        # `events` items are untyped objects in the document: the client hands back their
        # JSON in additional_properties.
        events = [e.additional_properties for e in life.events]
        created = [e for e in events if e.get("type") == "lifecycle" and e.get("kind") == "created"]
        check(len(created) == 1, f"lifecycle has {len(created)} `created` events: {events}")
        check(created[0].get("credential_id") == cred.id and created[0].get("version") == 1, f"created: {created[0]}")
        check(created[0].get("fingerprint") == cred.fingerprint, f"created fingerprint: {created[0]}")
        calls = [e for e in events if e.get("type") == "call"]
        check(len(calls) == 1, f"lifecycle has {len(calls)} calls: {events}")
        # The call's resolution is the documented ResolutionAudit.
        resolution = m.ResolutionAudit.from_dict(calls[0]["resolution"])
        check(resolution.call_id == call_id and resolution.seq == row.seq, f"lifecycle call: {resolution!r}")
        check(resolution.outcome == m.Outcome.DENIED, f"lifecycle call outcome: {resolution!r}")

        self.step("revoke the credential (the body must confirm it)")
        revoked = self.call(
            "credentials",
            "revoke_credential",
            org_name,
            cred_name,
            expect=200,
            body=m.ConfirmBody.from_dict({"confirm": True}),
        )
        check(isinstance(revoked, m.Credential) and revoked.state == m.CredentialState.REVOKED, f"revoked: {revoked!r}")
        status, body = self.refused_chat_completion(issued.token, f"genclient-{uuid.uuid4()}", "gpt-4o-mini")
        check(status == 403, f"proxy after revocation: expected 403, got {status}: {body}")
        check(json.loads(body).get("error", {}).get("code") == "credential_revoked", f"proxy after revocation: {body}")
        life = self.call("credentials", "credential_lifecycle", org_name, cred_name, expect=200)
        kinds = [e.additional_properties.get("kind") for e in life.events if e.additional_properties.get("type") == "lifecycle"]
        check(kinds == ["created", "revoked"], f"lifecycle events after revocation: {kinds}")

    def refused_chat_completion(self, token: str, call_id: str, model: str = "gpt-4o") -> tuple[int, str]:
        """POST /openai/v1/chat/completions that byok refuses before any upstream (by default
        for gpt-4o, which the credential's scope leaves out)."""
        request = urllib.request.Request(
            f"{self.proxy_url}/openai/v1/chat/completions",
            data=json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}]}).encode(),
            headers={
                "authorization": f"Bearer {token}",
                "content-type": "application/json",
                "x-byok-call-id": call_id,
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode("utf-8", "replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--admin-url", required=True)
    parser.add_argument("--proxy-url", required=True)
    parser.add_argument("--operator-token-file", required=True)
    parser.add_argument("--scratch", required=True, help="a directory for the secret's file")
    parser.add_argument("--package", default="byok_admin_client", help="the generated package's import name")
    driver = Driver(parser.parse_args())
    driver.run()
    print(f"operations driven: {len(driver.driven)} ({', '.join(sorted(driver.driven))})")


if __name__ == "__main__":
    main()

// byok's read-only web console. Every piece of data comes from the admin API (/v1/…)
// with the admin token the user pasted, which is kept in this tab's sessionStorage only
// (never a cookie, never the URL). Data is rendered with text nodes only: nothing from
// the API is ever parsed as markup (the page's policy requires Trusted Types, so an
// HTML-parsing sink given a string would throw).
"use strict";

(() => {
  const TOKEN_KEY = "byok.console.admin-token";
  const DEFAULT_PAGE = 100;
  const MAX_PAGE = 10000;
  const main = document.getElementById("main");
  const login = document.getElementById("login");
  const loginForm = document.getElementById("login-form");
  const loginInput = document.getElementById("token");
  const loginProblem = document.getElementById("login-problem");
  const crumbs = document.getElementById("crumbs");
  const who = document.getElementById("who");
  const signOut = document.getElementById("sign-out");

  // --- the token: this tab's sessionStorage, nowhere else --------------------------
  const token = {
    get: () => sessionStorage.getItem(TOKEN_KEY),
    set: (text) => sessionStorage.setItem(TOKEN_KEY, text),
    clear: () => sessionStorage.removeItem(TOKEN_KEY),
  };

  // --- building nodes: text only -----------------------------------------------------
  // el("td", {class: "x"}, "text", otherNode): strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : text(child));
    }
    return node;
  }

  function text(value) {
    const node = document.createTextNode("");
    node.textContent = String(value);
    return node;
  }

  const DASH = "—";
  const shown = (value) => (value === undefined || value === null || value === "" ? DASH : String(value));

  // A link inside the console: "#/" and encoded path segments only.
  function route(...segments) {
    return "#/" + segments.map((s) => encodeURIComponent(String(s))).join("/");
  }

  function link(label, ...segments) {
    return el("a", { href: route(...segments) }, label);
  }

  function when(stamp) {
    if (!stamp) return DASH;
    const node = el("time", { datetime: stamp, title: stamp }, String(stamp).replace("T", " ").replace(/\.\d+Z$/, "Z"));
    return node;
  }

  function table(id, headings, rows) {
    return el(
      "table",
      { id },
      el("thead", null, el("tr", null, headings.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", null, rows),
    );
  }

  function facts(id, pairs) {
    return el(
      "table",
      { id, class: "facts" },
      el(
        "tbody",
        null,
        pairs.map(([field, label, value]) =>
          el("tr", { "data-field": field }, el("th", { scope: "row" }, label), el("td", null, value ?? DASH)),
        ),
      ),
    );
  }

  function problem(err) {
    const message = err instanceof ApiProblem ? `${err.code}: ${err.message}` : String(err && err.message ? err.message : err);
    return el("p", { class: "problem", role: "alert" }, message);
  }

  // --- the admin API ---------------------------------------------------------------
  class ApiProblem extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(path) {
    const bearer = token.get();
    if (!bearer) throw new ApiProblem(401, "unauthorized", "sign in with an admin token");
    let response;
    try {
      response = await fetch(path, {
        headers: { Authorization: "Bearer " + bearer, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        redirect: "error",
        referrerPolicy: "no-referrer",
      });
    } catch (err) {
      throw new ApiProblem(0, "unreachable", "the admin API did not answer (" + err.message + ")");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && body.error ? body.error : {};
      const failure = new ApiProblem(response.status, detail.code || "http_" + response.status, detail.message || response.statusText);
      if (response.status === 401) {
        token.clear();
        showLogin("The admin token was refused (unknown, expired or revoked): " + failure.message);
      }
      throw failure;
    }
    return body;
  }

  const orgPath = (org) => "/v1/orgs/" + encodeURIComponent(org);
  const credPath = (org, cred) => orgPath(org) + "/credentials/" + encodeURIComponent(cred);

  // Team and workflow names of an org, to show names instead of ids.
  async function directory(org) {
    const [teams, workflows] = await Promise.all([
      api(orgPath(org) + "/teams").catch(() => ({ teams: [] })),
      api(orgPath(org) + "/workflows").catch(() => ({ workflows: [] })),
    ]);
    const names = new Map();
    for (const item of [...(teams.teams || []), ...(workflows.workflows || [])]) names.set(item.id, item.name);
    return (id) => (id && names.has(id) ? `${names.get(id)} (${id})` : shown(id));
  }

  // Whose token this is: only the operator may list the KMSs.
  let role = null;
  async function whoAmI() {
    if (role) return role;
    try {
      await api("/v1/kms");
      role = "operator";
    } catch (err) {
      if (!(err instanceof ApiProblem && err.status === 403)) throw err;
      role = "org admin";
    }
    return role;
  }

  // --- pages -------------------------------------------------------------------------
  async function orgsPage() {
    const { orgs } = await api("/v1/orgs");
    // An org-admin token sees one org: straight to it.
    if (role !== "operator" && orgs.length === 1) {
      location.replace(route("orgs", orgs[0].name));
      return null;
    }
    setCrumbs([["Orgs"]]);
    const rows = orgs.map((org) =>
      el(
        "tr",
        { "data-org": org.name },
        el("td", null, link(org.name, "orgs", org.name)),
        el("td", { class: "id" }, org.id),
        el("td", null, org.tier),
        el("td", null, el("span", { class: "state state-" + org.state }, org.state)),
        el("td", null, shown(org.kms)),
        el("td", null, when(org.created_at)),
      ),
    );
    return [
      el("h1", null, "Orgs"),
      orgs.length ? table("orgs", ["Name", "Id", "Tier", "State", "KMS", "Created"], rows) : el("p", null, "No orgs yet."),
    ];
  }

  function chainStatus(report) {
    if (report instanceof Error) {
      return el("p", { id: "chain-status", class: "chain chain-unknown", "data-ok": "unknown" }, "The org's audit chains: could not verify (", problem(report).textContent, ")");
    }
    if (report.ok) {
      return el(
        "p",
        { id: "chain-status", class: "chain chain-ok", "data-ok": "true" },
        "The org's audit chains verified: OK (",
        String(report.checked),
        " entries checked)",
      );
    }
    const bad = report.first_bad || {};
    return el(
      "p",
      { id: "chain-status", class: "chain chain-bad", "data-ok": "false" },
      "The org's audit chains are BROKEN: first bad link in chain ",
      shown(bad.chain),
      " at ",
      shown(bad.seq),
      " (",
      shown(bad.row),
      "): ",
      shown(bad.problem),
      " — ",
      shown(bad.detail),
    );
  }

  function scopeText(scope, name) {
    if (!scope) return DASH;
    const parts = [];
    for (const [key, label] of [
      ["model_families", "model families"],
      ["capabilities", "capabilities"],
      ["modes", "modes"],
      ["teams", "teams"],
      ["workflows", "workflows"],
    ]) {
      const values = scope[key] || [];
      if (values.length) parts.push(label + ": " + values.map((v) => (key === "teams" || key === "workflows" ? name(v) : v)).join(", "));
    }
    return parts.length ? parts.join("; ") : "any";
  }

  function health(h) {
    if (!h) return DASH;
    return [h.state, h.until ? " until " + h.until : "", h.last_status ? " (last " + h.last_status + ")" : ""].join("");
  }

  async function orgPage(org) {
    const [detail, list, report, name] = await Promise.all([
      api(orgPath(org)),
      api(orgPath(org) + "/credentials"),
      api(orgPath(org) + "/audit/verify").catch((err) => err),
      directory(org),
    ]);
    setCrumbs([["Orgs", "orgs"], [detail.name]]);
    const rows = list.credentials.map((c) =>
      el(
        "tr",
        { "data-credential": c.name },
        el("td", { "data-field": "name" }, link(c.name, "orgs", detail.name, "credentials", c.name)),
        el("td", { "data-field": "provider" }, c.provider),
        el("td", { "data-field": "state" }, el("span", { class: "state state-" + c.state }, c.state)),
        el("td", { "data-field": "version" }, String(c.version)),
        el("td", { "data-field": "fingerprint", class: "id" }, c.fingerprint),
        el("td", { "data-field": "scope" }, scopeText(c.scope, name)),
        el("td", { "data-field": "rotate_by" }, when(c.rotate_by)),
        el("td", { "data-field": "expires_at" }, when(c.expires_at)),
        el("td", { "data-field": "health" }, health(c.health)),
        el("td", { "data-field": "updated_at" }, when(c.updated_at)),
      ),
    );
    return [
      el("h1", null, "Org ", detail.name),
      facts("org-facts", [
        ["id", "Id", el("span", { class: "id" }, detail.id)],
        ["tier", "Tier", detail.tier],
        ["state", "State", detail.state],
        ["kms", "KMS", shown(detail.kms)],
        ["kek_version", "KEK version", shown(detail.kek_version)],
        ["retention_days", "Audit retention (days)", detail.retention_days == null ? "tier default" : String(detail.retention_days)],
        ["created_at", "Created", when(detail.created_at)],
      ]),
      chainStatus(report),
      el("p", null, link("Usage statement for this month", "orgs", detail.name, "usage")),
      el("h2", null, "Credentials"),
      list.credentials.length
        ? table(
            "credentials",
            ["Name", "Provider", "State", "Version", "Fingerprint", "Scope", "Rotate by", "Expires", "Health", "Updated"],
            rows,
          )
        : el("p", null, "No credentials."),
    ];
  }

  function actorText(actor) {
    if (!actor) return DASH;
    if (typeof actor !== "object") return String(actor);
    const rest = Object.entries(actor)
      .filter(([k]) => k !== "kind")
      .map(([, v]) => (typeof v === "object" ? JSON.stringify(v) : String(v)));
    return [actor.kind, ...rest].filter(Boolean).join(" ");
  }

  function detailsText(details) {
    if (details === undefined || details === null) return "";
    if (typeof details !== "object") return String(details);
    return Object.entries(details)
      .filter(([, v]) => v !== null && !(Array.isArray(v) && v.length === 0))
      .map(([k, v]) => k + ": " + (typeof v === "object" ? JSON.stringify(v) : String(v)))
      .join("; ");
  }

  function timelineRow(item, name) {
    if (item.type === "call") {
      const r = item.resolution || {};
      const c = item.completion;
      const parts = [
        "model " + shown(r.model) + (r.model_family ? " (" + r.model_family + ")" : ""),
        shown(r.capability) + "/" + shown(r.mode),
        r.workflow_id ? "workflow " + name(r.workflow_id) : null,
        "call id " + shown(r.call_id),
        r.attempt > 1 ? "attempt " + r.attempt : null,
        r.reason ? "reason " + r.reason : null,
        r.detail ? r.detail : null,
      ];
      if (c) {
        parts.push(
          shown(c.status) +
            (c.upstream_status ? ", upstream " + c.upstream_status : "") +
            (c.latency_us != null ? " in " + (c.latency_us / 1000).toFixed(1) + " ms" : "") +
            (c.input_tokens != null ? ", " + c.input_tokens + " input / " + shown(c.output_tokens) + " output tokens" : ""),
        );
      }
      return el(
        "tr",
        { class: "call outcome-" + r.outcome, "data-type": "call", "data-outcome": r.outcome, "data-call-id": r.call_id },
        el("td", null, when(r.at)),
        el("td", null, "call ", el("span", { class: "outcome" }, shown(r.outcome))),
        el("td", null, shown(r.credential_version)),
        el("td", { class: "id" }, shown(r.fingerprint)),
        el("td", null, "team " + name(r.team_id), el("br"), "token ", el("span", { class: "id" }, shown(r.token_id))),
        el("td", { class: "details" }, parts.filter(Boolean).join(" · ")),
      );
    }
    return el(
      "tr",
      { class: "event", "data-type": "lifecycle", "data-kind": item.kind },
      el("td", null, when(item.at)),
      el("td", null, el("span", { class: "kind" }, shown(item.kind))),
      el("td", null, shown(item.version)),
      el("td", { class: "id" }, shown(item.fingerprint)),
      el("td", null, actorText(item.actor)),
      el("td", { class: "details" }, detailsText(item.details)),
    );
  }

  async function credentialPage(org, cred, query) {
    const requested = Number.parseInt(query.get("limit") || "", 10);
    const limit = Number.isInteger(requested) && requested >= 1 && requested <= MAX_PAGE ? requested : DEFAULT_PAGE;
    const lifecycle = (after) =>
      api(credPath(org, cred) + "/lifecycle?limit=" + limit + (after ? "&after=" + encodeURIComponent(after) : ""));
    const [orgDetail, c, page, report, name] = await Promise.all([
      api(orgPath(org)),
      api(credPath(org, cred)),
      lifecycle(null),
      api(orgPath(org) + "/audit/verify").catch((err) => err),
      directory(org),
    ]);
    setCrumbs([["Orgs", "orgs"], [orgDetail.name, "orgs", orgDetail.name], [c.name]]);

    const timeline = table("timeline", ["Time", "Entry", "Version", "Fingerprint", "Who", "Details"], page.events.map((item) => timelineRow(item, name)));
    const body = timeline.tBodies[0];
    const more = el("button", { id: "timeline-more", type: "button" }, "More");
    const status = el("p", { id: "timeline-status", class: "muted" });
    let next = page.next;
    const showing = () => {
      more.hidden = !next;
      status.textContent = body.children.length + " entries shown" + (next ? "; more to come" : "; that is all");
    };
    more.addEventListener("click", async () => {
      more.disabled = true;
      try {
        const following = await lifecycle(next);
        for (const item of following.events) body.append(timelineRow(item, name));
        next = following.next;
        showing();
      } catch (err) {
        status.replaceChildren(problem(err));
      } finally {
        more.disabled = false;
      }
    });
    showing();

    return [
      el("h1", null, "Credential ", c.name),
      facts("credential-facts", [
        ["id", "Id", el("span", { class: "id" }, c.id)],
        ["provider", "Provider", c.provider],
        ["state", "State", el("span", { class: "state state-" + c.state }, c.state)],
        ["version", "Version", String(c.version)],
        ["fingerprint", "Fingerprint", el("span", { class: "id" }, c.fingerprint)],
        ["scope", "Scope", scopeText(c.scope, name)],
        ["rotate_by", "Rotate by", when(c.rotate_by)],
        ["expires_at", "Expires", when(c.expires_at)],
        ["base_url", "Base URL", shown(c.base_url)],
        ["priority", "Priority / weight", shown(c.priority) + " / " + shown(c.weight)],
        ["health", "Health", health(c.health)],
        ["created_at", "Created", when(c.created_at)],
        ["version_created_at", "Current version since", when(c.version_created_at)],
      ]),
      chainStatus(report),
      el("h2", null, "Versions"),
      table(
        "versions",
        ["Version", "Fingerprint", "KEK version", "Created"],
        (c.versions || []).map((v) =>
          el("tr", null, el("td", null, String(v.version)), el("td", { class: "id" }, v.fingerprint), el("td", null, shown(v.kek_version)), el("td", null, when(v.created_at))),
        ),
      ),
      el("h2", null, "Timeline"),
      el("p", { class: "muted" }, "Every lifecycle event and every call this credential served or refused, oldest first."),
      timeline,
      status,
      more,
    ];
  }

  function rateCardText(card) {
    if (!card) return DASH;
    if (typeof card !== "object") return String(card);
    return Object.entries(card)
      .map(([k, v]) => k.replace(/_/g, " ") + " " + shown(v))
      .join(" · ");
  }

  async function usagePage(org) {
    const [orgDetail, s] = await Promise.all([api(orgPath(org)), api(orgPath(org) + "/usage")]);
    setCrumbs([["Orgs", "orgs"], [orgDetail.name, "orgs", orgDetail.name], ["Usage"]]);
    const money = (amount) => shown(amount) + " " + shown(s.currency);
    const rows = (s.lines || []).map((line) =>
      el(
        "tr",
        null,
        el("td", null, shown(line.tier)),
        el("td", null, shown(line.provider)),
        el("td", null, shown(line.model_family)),
        el("td", null, shown(line.credential_owner)),
        el("td", { class: "num" }, shown(line.calls)),
        el("td", { class: "num" }, shown(line.input_tokens)),
        el("td", { class: "num" }, shown(line.output_tokens)),
        el("td", { class: "num" }, money(line.platform_fee)),
        el("td", { class: "num" }, money(line.provider_cost)),
        el("td", null, rateCardText(line.rate_card)),
      ),
    );
    return [
      el("h1", null, "Usage statement of ", orgDetail.name),
      el("p", { class: "muted" }, "The current UTC month: from ", when(s.from), " to ", when(s.to), " (exclusive)."),
      facts("usage-totals", [
        ["calls", "Calls", shown(s.calls)],
        ["denied", "Denied", shown(s.denied)],
        ["unanswered", "Unanswered", shown(s.unanswered)],
        ["input_tokens", "Input tokens", shown(s.input_tokens)],
        ["output_tokens", "Output tokens", shown(s.output_tokens)],
        ["platform_fee", "Platform fee", money(s.platform_fee)],
        ["provider_cost", "Provider cost", money(s.provider_cost)],
        ["total", "Total", money(s.total)],
        ["unpriced_calls", "Unpriced calls", shown(s.unpriced_calls)],
      ]),
      el("h2", null, "Lines"),
      rows.length
        ? table(
            "usage-lines",
            ["Tier", "Provider", "Model family", "Credential owner", "Calls", "Input tokens", "Output tokens", "Platform fee", "Provider cost", "Rate card"],
            rows,
          )
        : el("p", null, "No calls this month."),
    ];
  }

  // --- navigation --------------------------------------------------------------------
  function setCrumbs(items) {
    crumbs.replaceChildren(
      ...items.flatMap(([label, ...segments], i) => [
        i ? el("span", { class: "sep", "aria-hidden": "true" }, "›") : null,
        segments.length ? link(label, ...segments) : el("span", null, label),
      ]).filter(Boolean),
    );
  }

  function showLogin(message) {
    role = null;
    main.hidden = true;
    main.replaceChildren();
    crumbs.replaceChildren();
    who.textContent = "";
    signOut.hidden = true;
    login.hidden = false;
    loginProblem.textContent = message || "";
    loginInput.value = "";
    loginInput.focus();
  }

  function parseHash() {
    const [path, search] = location.hash.replace(/^#\/?/, "").split("?");
    const segments = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { segments, query: new URLSearchParams(search || "") };
  }

  let generation = 0;

  async function render() {
    const mine = ++generation;
    let where;
    try {
      where = parseHash();
    } catch (_) {
      where = { segments: ["?"], query: new URLSearchParams() };
    }
    const { segments, query } = where;
    if (!token.get() || segments[0] === "login") {
      showLogin("");
      return;
    }
    login.hidden = true;
    main.hidden = false;
    signOut.hidden = false;
    main.setAttribute("aria-busy", "true");
    let content;
    try {
      who.textContent = await whoAmI();
      const [first, org, section, cred, ...rest] = segments;
      if (segments.length === 0 || (first === "orgs" && segments.length === 1)) content = await orgsPage();
      else if (first === "orgs" && segments.length === 2) content = await orgPage(org);
      else if (first === "orgs" && section === "usage" && segments.length === 3) content = await usagePage(org);
      else if (first === "orgs" && section === "credentials" && cred && rest.length === 0) content = await credentialPage(org, cred, query);
      else content = [el("h1", null, "Not found"), el("p", null, "No such page. ", link("Orgs", "orgs"))];
    } catch (err) {
      if (err instanceof ApiProblem && err.status === 401) return;
      content = [problem(err)];
    }
    if (mine !== generation || content === null) return;
    main.removeAttribute("aria-busy");
    main.replaceChildren(...content);
  }

  loginForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const pasted = loginInput.value.trim().replace(/^Bearer\s+/i, "");
    loginInput.value = "";
    if (!pasted) return;
    token.set(pasted);
    loginProblem.textContent = "";
    try {
      await api("/v1/orgs");
    } catch (err) {
      if (!(err instanceof ApiProblem && err.status === 401)) {
        token.clear();
        loginProblem.textContent = problem(err).textContent;
      }
      return;
    }
    if (location.hash === "#/orgs") render();
    else location.hash = "#/orgs";
  });

  signOut.addEventListener("click", () => {
    token.clear();
    location.hash = "#/login";
    showLogin("Signed out.");
  });

  window.addEventListener("hashchange", render);
  render();
})();

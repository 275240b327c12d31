"""Drive byok with the official provider SDKs, unchanged except for base URL and key.

Run by crates/byok/tests/sdk_e2e.rs, which starts `byok serve` and the mock provider
and passes the sidecar's address and a workload token in the environment:

    BYOK_PROXY        http://127.0.0.1:PORT
    BYOK_TOKEN        a workload token of the team that may use both credentials
    BYOK_DENIED_TOKEN a workload token of a team no credential admits
    BYOK_STARTUP_TOKEN a workload token of a katman-a org with no credential of its own,
                      served by the platform pool, whose budget allows one call
    BYOK_PLATFORM_CREDENTIALS the platform pool's credential ids, comma-separated

Prints one JSON object with what each step saw; exits non-zero on the first failure.
"""

import json
import os
import sys

import anthropic
import openai

proxy = os.environ["BYOK_PROXY"]
token = os.environ["BYOK_TOKEN"]
denied_token = os.environ["BYOK_DENIED_TOKEN"]
seen = {"openai_version": openai.__version__, "anthropic_version": anthropic.__version__}


def check(condition, message):
    if not condition:
        print(json.dumps(seen, indent=2))
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


# --- OpenAI SDK -------------------------------------------------------------------
oai = openai.OpenAI(base_url=f"{proxy}/openai/v1", api_key=token, max_retries=0)

chat = oai.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "say hello to the vault"}],
    extra_headers={"x-byok-call-id": "sdk-openai-sync"},
)
seen["openai_sync"] = chat.choices[0].message.content
check(chat.choices[0].message.content, "OpenAI sync chat returned no content")
check(chat.usage is not None and chat.usage.prompt_tokens > 0, "OpenAI sync chat has no usage")

raw = oai.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "headers please"}]
)
check(raw.headers.get("x-byok-credential", "").startswith("cred_"), "no x-byok-credential header")
check(len(raw.headers.get("x-byok-call-id", "")) > 0, "no x-byok-call-id header")

pieces = []
usage = None
stream = oai.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "stream a greeting please"}],
    stream=True,
    stream_options={"include_usage": True},
    extra_headers={"x-byok-call-id": "sdk-openai-stream"},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = chunk.usage
seen["openai_stream"] = "".join(pieces)
check(len(pieces) > 1, "OpenAI stream came in fewer than two pieces")
check(usage is not None and usage.completion_tokens > 0, "OpenAI stream carried no usage")

embedding = oai.embeddings.create(model="text-embedding-3-small", input="vault")
check(len(embedding.data[0].embedding) > 0, "empty embedding")
seen["openai_embedding_dims"] = len(embedding.data[0].embedding)

models = oai.models.list()
seen["openai_models"] = [m.id for m in models.data][:3]

# A bad token surfaces as the SDK's AuthenticationError with byok's message.
bad = openai.OpenAI(base_url=f"{proxy}/openai/v1", api_key="byok_not-a-real-token", max_retries=0)
try:
    bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    check(False, "a bad token was accepted")
except openai.AuthenticationError as error:
    seen["openai_bad_token"] = {"status": error.status_code, "code": error.code, "message": error.message}
    check(error.status_code == 401 and error.code == "invalid_workload_token", "wrong 401 for a bad token")

# A scope denial surfaces as PermissionDeniedError naming the dimension.
other = openai.OpenAI(base_url=f"{proxy}/openai/v1", api_key=denied_token, max_retries=0)
try:
    other.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    check(False, "a team outside the credential's scope was served")
except openai.PermissionDeniedError as error:
    seen["openai_denied"] = {"status": error.status_code, "code": error.code, "message": error.message}
    check(error.code == "scope_denied" and "team" in error.message, "denial does not name the team dimension")

# --- Anthropic SDK ----------------------------------------------------------------
ant = anthropic.Anthropic(base_url=f"{proxy}/anthropic", api_key=token, max_retries=0)

message = ant.messages.create(
    model="claude-sonnet-4-5",
    max_tokens=64,
    messages=[{"role": "user", "content": "say hello to the vault"}],
    extra_headers={"x-byok-call-id": "sdk-anthropic-sync"},
)
seen["anthropic_sync"] = message.content[0].text
check(message.content[0].text, "Anthropic sync message returned no text")
check(message.usage.input_tokens > 0 and message.usage.output_tokens > 0, "Anthropic usage missing")

texts = []
with ant.messages.stream(
    model="claude-sonnet-4-5",
    max_tokens=64,
    messages=[{"role": "user", "content": "stream a greeting please"}],
    extra_headers={"x-byok-call-id": "sdk-anthropic-stream"},
) as stream:
    for text in stream.text_stream:
        texts.append(text)
    final = stream.get_final_message()
seen["anthropic_stream"] = "".join(texts)
check(len(texts) > 1, "Anthropic stream came in fewer than two pieces")
check(final.usage.output_tokens > 0, "Anthropic stream carried no usage")

# The SDK's own bearer form (auth_token) is accepted too.
bearer = anthropic.Anthropic(base_url=f"{proxy}/anthropic", auth_token=token, max_retries=0)
reply = bearer.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
check(reply.content[0].text, "Anthropic with auth_token failed")

bad = anthropic.Anthropic(base_url=f"{proxy}/anthropic", api_key="byok_not-a-real-token", max_retries=0)
try:
    bad.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    check(False, "a bad token was accepted by the Anthropic route")
except anthropic.AuthenticationError as error:
    seen["anthropic_bad_token"] = {"status": error.status_code, "message": str(error)}
    check(error.status_code == 401, "wrong status for a bad token on the Anthropic route")

# --- Billing tiers -----------------------------------------------------------------
# A katman-a org without keys of its own is served by the platform pool, until its
# monthly budget is spent: then the SDKs raise their rate-limit error with byok's code.
startup_token = os.environ["BYOK_STARTUP_TOKEN"]
platform = os.environ["BYOK_PLATFORM_CREDENTIALS"].split(",")
startup = openai.OpenAI(base_url=f"{proxy}/openai/v1", api_key=startup_token, max_retries=0)
served = startup.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "on the platform's key"}]
)
check(served.headers.get("x-byok-credential") in platform, "katman-a was not served by the platform pool")
check(served.parse().usage.prompt_tokens > 0, "the platform-served call has no usage")
try:
    startup.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    check(False, "a spent budget still served a call")
except openai.RateLimitError as error:
    seen["openai_budget"] = {"status": error.status_code, "code": error.code, "message": error.message}
    check(error.code == "budget_exceeded" and "monthly budget" in error.message, "wrong 429 for a spent budget")
startup_ant = anthropic.Anthropic(base_url=f"{proxy}/anthropic", api_key=startup_token, max_retries=0)
try:
    startup_ant.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    check(False, "a spent budget still served an Anthropic call")
except anthropic.RateLimitError as error:
    body = error.body if isinstance(error.body, dict) else {}
    seen["anthropic_budget"] = {"status": error.status_code, "body": body}
    check(body.get("error", {}).get("code") == "budget_exceeded", "the Anthropic 429 does not name budget_exceeded")
    check("monthly budget" in str(error), "the Anthropic 429's message does not say why")

print(json.dumps(seen, indent=2))

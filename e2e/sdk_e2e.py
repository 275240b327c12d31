"""Drive byok with the official provider SDKs, unchanged except for base URL and key:
OpenAI (chat, Responses API, embeddings), Anthropic, Azure OpenAI (`openai.AzureOpenAI`)
and Gemini (`google-genai`).

Run by crates/byok/tests/sdk_e2e.rs, which starts `byok serve` and the mock provider
and passes the sidecar's address and a workload token in the environment:

    BYOK_PROXY        http://127.0.0.1:PORT
    BYOK_TOKEN        a workload token of the team that may use both credentials
    BYOK_DENIED_TOKEN a workload token of a team no credential admits
    BYOK_STARTUP_TOKEN a workload token of a katman-a org with no credential of its own,
                      served by the platform pool, whose budget allows one call
    BYOK_PLATFORM_CREDENTIALS the platform pool's credential ids, comma-separated

Prints one JSON object with what each step saw — under "usage", the input and output
tokens each named call's SDK reported, which the Rust side compares with what byok
recorded; exits non-zero on the first failure.
"""

import json
import os
import sys

import anthropic
import openai
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

proxy = os.environ["BYOK_PROXY"]
token = os.environ["BYOK_TOKEN"]
denied_token = os.environ["BYOK_DENIED_TOKEN"]
seen = {
    "openai_version": openai.__version__,
    "anthropic_version": anthropic.__version__,
    "google_genai_version": genai.__version__,
    "usage": {},
}


def reported(call_id, input_tokens, output_tokens):
    """What the SDK saw as the call's usage, for the Rust side to compare with byok's."""
    seen["usage"][call_id] = [input_tokens, output_tokens]


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
reported("sdk-openai-sync", chat.usage.prompt_tokens, chat.usage.completion_tokens)

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
reported("sdk-openai-stream", usage.prompt_tokens, usage.completion_tokens)

embedding = oai.embeddings.create(
    model="text-embedding-3-small",
    input=["the vault keeps keys", "and hands out tokens"],
    extra_headers={"x-byok-call-id": "sdk-openai-embeddings"},
)
check(len(embedding.data) == 2 and len(embedding.data[0].embedding) > 0, "empty embedding")
check(embedding.usage.prompt_tokens > 0, "embeddings carried no usage")
seen["openai_embedding_dims"] = len(embedding.data[0].embedding)
reported("sdk-openai-embeddings", embedding.usage.prompt_tokens, None)

# --- OpenAI Responses API ------------------------------------------------------------
response = oai.responses.create(
    model="gpt-4o-mini",
    instructions="be brief",
    input="say hello to the vault",
    extra_headers={"x-byok-call-id": "sdk-responses-sync"},
)
seen["responses_sync"] = response.output_text
check(response.output_text, "Responses API returned no text")
check(response.usage.input_tokens > 0 and response.usage.output_tokens > 0, "Responses API usage missing")
reported("sdk-responses-sync", response.usage.input_tokens, response.usage.output_tokens)

events = []
deltas = []
completed = None
stream = oai.responses.create(
    model="gpt-4o-mini",
    input=[{"role": "user", "content": "stream a greeting please"}],
    stream=True,
    extra_headers={"x-byok-call-id": "sdk-responses-stream"},
)
for event in stream:
    events.append(event.type)
    if event.type == "response.output_text.delta":
        deltas.append(event.delta)
    if event.type == "response.completed":
        completed = event.response
seen["responses_stream"] = {"text": "".join(deltas), "events": sorted(set(events))}
check(events[0] == "response.created", f"the Responses stream began with {events[:1]}")
check(events[-1] == "response.completed", f"the Responses stream ended with {events[-1:]}")
check(len(deltas) > 1, "the Responses stream came in fewer than two deltas")
check(completed is not None and completed.usage.output_tokens > 0, "response.completed carried no usage")
check(completed.output_text == "".join(deltas), "the deltas do not add up to the completed text")
reported("sdk-responses-stream", completed.usage.input_tokens, completed.usage.output_tokens)

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
reported("sdk-anthropic-sync", message.usage.input_tokens, message.usage.output_tokens)
reported("sdk-anthropic-stream", final.usage.input_tokens, final.usage.output_tokens)

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

ant_other = anthropic.Anthropic(base_url=f"{proxy}/anthropic", api_key=denied_token, max_retries=0)
try:
    ant_other.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    check(False, "a team outside the credential's scope was served by the Anthropic route")
except anthropic.PermissionDeniedError as error:
    body = error.body if isinstance(error.body, dict) else {}
    seen["anthropic_denied"] = {"status": error.status_code, "body": body}
    check(body.get("error", {}).get("type") == "permission_error", "the Anthropic 403 is not a permission_error")
    check(body.get("error", {}).get("code") == "scope_denied", "the Anthropic 403 does not name scope_denied")

# --- Azure OpenAI (openai.AzureOpenAI) ----------------------------------------------
# The deployment is the model argument; the SDK sends the key in `api-key`.
AZURE_API_VERSION = "2024-10-21"
azure = openai.AzureOpenAI(
    azure_endpoint=f"{proxy}/azure-openai", api_key=token, api_version=AZURE_API_VERSION, max_retries=0
)
az_chat = azure.chat.completions.with_raw_response.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "say hello to the vault"}],
    extra_headers={"x-byok-call-id": "sdk-azure-sync"},
)
check(az_chat.headers.get("x-byok-credential", "").startswith("cred_"), "no x-byok-credential on the Azure call")
az_chat = az_chat.parse()
seen["azure_sync"] = az_chat.choices[0].message.content
check(az_chat.choices[0].message.content, "Azure sync chat returned no content")
check(az_chat.usage.prompt_tokens > 0 and az_chat.usage.completion_tokens > 0, "Azure sync chat has no usage")
reported("sdk-azure-sync", az_chat.usage.prompt_tokens, az_chat.usage.completion_tokens)

pieces = []
usage = None
for chunk in azure.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "stream a greeting please"}],
    stream=True,
    stream_options={"include_usage": True},
    extra_headers={"x-byok-call-id": "sdk-azure-stream"},
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = chunk.usage
seen["azure_stream"] = "".join(pieces)
check(len(pieces) > 1, "Azure stream came in fewer than two pieces")
check(usage is not None and usage.completion_tokens > 0, "Azure stream carried no usage")
reported("sdk-azure-stream", usage.prompt_tokens, usage.completion_tokens)

azure_other = openai.AzureOpenAI(
    azure_endpoint=f"{proxy}/azure-openai", api_key=denied_token, api_version=AZURE_API_VERSION, max_retries=0
)
try:
    azure_other.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    check(False, "a team outside the credential's scope was served by the Azure route")
except openai.PermissionDeniedError as error:
    seen["azure_denied"] = {"status": error.status_code, "code": error.code, "message": error.message}
    check(error.code == "scope_denied" and "team" in error.message, "the Azure denial does not name the team")


# --- Gemini (google-genai) ------------------------------------------------------------
# The SDK sends its api_key in `x-goog-api-key`; byok takes the workload token from it.
# Its default API version (`v1`, or `GOOGLE_GENAI_API_VERSION`) and `v1beta` are driven.
def gemini_client(api_key, call_id=None, api_version=None):
    headers = {"x-byok-call-id": call_id} if call_id else None
    return genai.Client(
        api_key=api_key,
        http_options=genai_types.HttpOptions(
            base_url=f"{proxy}/gemini",
            api_version=api_version,
            headers=headers,
            retry_options=genai_types.HttpRetryOptions(attempts=1),
        ),
    )


for suffix, api_version in [("", None), ("-v1beta", "v1beta")]:
    # (A client closes its connections when it is collected: keep each one in a variable.)
    gem = gemini_client(token, f"sdk-gemini-sync{suffix}", api_version)
    reply = gem.models.generate_content(model="gemini-2.5-flash", contents="say hello to the vault")
    seen[f"gemini_sync{suffix}"] = reply.text
    check(reply.text, "Gemini generate_content returned no text")
    meta = reply.usage_metadata
    check(meta is not None and meta.prompt_token_count > 0 and meta.candidates_token_count > 0, "no Gemini usage")
    reported(f"sdk-gemini-sync{suffix}", meta.prompt_token_count, meta.candidates_token_count)

    texts = []
    meta = None
    gem_stream = gemini_client(token, f"sdk-gemini-stream{suffix}", api_version)
    for chunk in gem_stream.models.generate_content_stream(
        model="gemini-2.5-flash", contents="stream a greeting please"
    ):
        if chunk.text:
            texts.append(chunk.text)
        if chunk.usage_metadata is not None and chunk.usage_metadata.candidates_token_count:
            meta = chunk.usage_metadata
    seen[f"gemini_stream{suffix}"] = "".join(texts)
    check(len(texts) > 1, "Gemini stream came in fewer than two pieces")
    check(meta is not None and meta.candidates_token_count > 0, "Gemini stream carried no usageMetadata")
    reported(f"sdk-gemini-stream{suffix}", meta.prompt_token_count, meta.candidates_token_count)

gem_other = gemini_client(denied_token)
try:
    gem_other.models.generate_content(model="gemini-2.5-flash", contents="x")
    check(False, "a team outside the credential's scope was served by the Gemini route")
except genai_errors.ClientError as error:
    details = error.details if isinstance(error.details, dict) else {}
    reasons = [d.get("reason") for d in details.get("error", {}).get("details", []) if isinstance(d, dict)]
    seen["gemini_denied"] = {"code": error.code, "status": error.status, "message": error.message}
    check(error.code == 403 and error.status == "PERMISSION_DENIED", "the Gemini denial is not 403 PERMISSION_DENIED")
    check("scope_denied" in reasons and "team" in (error.message or ""), "the Gemini denial does not say why")

gem_bad = gemini_client("byok_not-a-real-token")
try:
    gem_bad.models.generate_content(model="gemini-2.5-flash", contents="x")
    check(False, "a bad token was accepted by the Gemini route")
except genai_errors.ClientError as error:
    seen["gemini_bad_token"] = {"code": error.code, "status": error.status}
    check(error.code == 401 and error.status == "UNAUTHENTICATED", "wrong error for a bad token on the Gemini route")

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

"""Drives byok-mock-provider with the official OpenAI and Anthropic Python SDKs.

Usage: official_sdks.py BASE_URL OPENAI_KEY ANTHROPIC_KEY
Exits non-zero (with a traceback) on the first failure; prints one line per check.
"""

import sys

import anthropic
import openai

base_url, openai_key, anthropic_key = sys.argv[1:4]
prompt = "hello from the sdk"
expected = "mock reply to: " + prompt


def check(name, condition, detail=""):
    if not condition:
        raise AssertionError(f"{name} failed: {detail}")
    print(f"ok {name}")


oa = openai.OpenAI(api_key=openai_key, base_url=base_url + "/v1", max_retries=0)

completion = oa.chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
)
check("openai chat", completion.choices[0].message.content == expected, completion)
check("openai chat model", completion.model == "gpt-4o-mini", completion.model)
check("openai chat usage", completion.usage.prompt_tokens == 4, completion.usage)

text = ""
usage = None
for chunk in oa.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": prompt}],
    stream=True,
    stream_options={"include_usage": True},
):
    for choice in chunk.choices:
        text += choice.delta.content or ""
    if chunk.usage is not None:
        usage = chunk.usage
check("openai chat stream", text == expected, text)
check("openai chat stream usage", usage is not None and usage.completion_tokens == 7, usage)

embedding = oa.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
check(
    "openai embeddings (base64)",
    len(embedding.data) == 2 and len(embedding.data[0].embedding) == 8
    and all(-1.0 <= v < 1.0 for v in embedding.data[0].embedding),
    embedding,
)

response = oa.responses.create(model="gpt-4o-mini", input=prompt)
check("openai responses", response.output_text == expected, response)

with oa.responses.stream(model="gpt-4o-mini", input=prompt) as stream:
    final = stream.get_final_response()
check("openai responses stream", final.output_text == expected, final)

models = oa.models.list()
check("openai models", any(m.id == "gpt-4o" for m in models), models)

try:
    openai.OpenAI(api_key="sk-wrong-key-0123456789", base_url=base_url + "/v1", max_retries=0).models.list()
    check("openai wrong key raises", False)
except openai.AuthenticationError as error:
    check("openai wrong key raises", error.status_code == 401 and error.code == "invalid_api_key", error)

# This SDK sends `api_key` as `Authorization: Bearer`; the real API takes it, the mock (like
# byok's injection) only takes `x-api-key`. So the key goes in that header explicitly.
an = anthropic.Anthropic(
    api_key=None,
    auth_token=None,
    base_url=base_url,
    default_headers={"x-api-key": anthropic_key},
    max_retries=0,
)

message = an.messages.create(
    model="claude-sonnet-5", max_tokens=100, messages=[{"role": "user", "content": prompt}]
)
check("anthropic message", message.content[0].text == expected, message)
check("anthropic usage", message.usage.input_tokens == 4 and message.usage.output_tokens == 7, message.usage)

with an.messages.stream(
    model="claude-sonnet-5", max_tokens=100, messages=[{"role": "user", "content": prompt}]
) as stream:
    streamed = "".join(stream.text_stream)
    final_message = stream.get_final_message()
check("anthropic stream", streamed == expected, streamed)
check("anthropic stream usage", final_message.usage.output_tokens == 7, final_message.usage)
check("anthropic stream stop", final_message.stop_reason == "end_turn", final_message.stop_reason)

raw = an.messages.create(
    model="claude-sonnet-5",
    max_tokens=100,
    messages=[{"role": "user", "content": prompt}],
    stream=True,
)
kinds = [event.type for event in raw]
check(
    "anthropic raw stream events",
    kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
    and kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"],
    kinds,
)

counted = an.messages.count_tokens(model="claude-sonnet-5", messages=[{"role": "user", "content": prompt}])
check("anthropic count_tokens", counted.input_tokens == 4, counted)

try:
    anthropic.Anthropic(
        api_key=None, base_url=base_url, default_headers={"x-api-key": "sk-ant-wrong"}, max_retries=0
    ).messages.create(model="claude-sonnet-5", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    check("anthropic wrong key raises", False)
except anthropic.AuthenticationError as error:
    check("anthropic wrong key raises", error.status_code == 401, error)

print("all sdk checks passed")

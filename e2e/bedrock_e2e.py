"""Drive byok's Bedrock route with boto3's `bedrock-runtime` client, unchanged but for
`endpoint_url`, the CA it trusts, and its Bedrock bearer token: the byok workload token in
`AWS_BEARER_TOKEN_BEDROCK`, which botocore sends as `Authorization: Bearer` (only over
HTTPS, hence byok's TLS listener).

Run by crates/byok/tests/bedrock_sdk_e2e.rs, which starts `byok serve` with TLS and the
mock provider (which verifies byok's SigV4 signature) and passes in the environment:

    BYOK_PROXY          https://127.0.0.1:PORT
    BYOK_CA             the PEM file of the CA that signed the listener's certificate
    BYOK_TOKEN          a workload token of the team the credentials admit
    BYOK_DENIED_TOKEN   a workload token of a team no credential admits

Prints one JSON object with what each call saw (usage per call, in call order); exits
non-zero on the first failure.
"""

import json
import os
import sys

import boto3
import botocore

proxy = os.environ["BYOK_PROXY"]
seen = {"boto3_version": boto3.__version__, "botocore_version": botocore.__version__, "usage": []}
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
PROFILE = "us.anthropic.claude-3-haiku-20240307-v1:0"


def check(condition, message):
    if not condition:
        print(json.dumps(seen, indent=2))
        print(f"FAILED: {message}", file=sys.stderr)
        sys.exit(1)


def client(token):
    # botocore reads the bearer token from the environment when the client is made.
    os.environ["AWS_BEARER_TOKEN_BEDROCK"] = token
    return boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=f"{proxy}/bedrock", verify=os.environ["BYOK_CA"]
    )


bedrock = client(os.environ["BYOK_TOKEN"])
messages = [{"role": "user", "content": [{"text": "say hello to the vault"}]}]

# --- Converse ------------------------------------------------------------------------
for model in (MODEL, PROFILE):
    answer = bedrock.converse(modelId=model, messages=messages, inferenceConfig={"maxTokens": 64})
    text = answer["output"]["message"]["content"][0]["text"]
    check(text, f"converse {model}: no text")
    usage = answer["usage"]
    check(usage["inputTokens"] > 0, f"converse {model}: no usage")
    seen["usage"].append(["converse " + model, usage["inputTokens"], usage["outputTokens"]])
    seen.setdefault("converse", []).append(text)

# --- ConverseStream ----------------------------------------------------------------------
pieces, usage, stop = [], None, None
for event in bedrock.converse_stream(modelId=MODEL, messages=messages)["stream"]:
    if "contentBlockDelta" in event:
        pieces.append(event["contentBlockDelta"]["delta"].get("text", ""))
    elif "messageStop" in event:
        stop = event["messageStop"]["stopReason"]
    elif "metadata" in event:
        usage = event["metadata"]["usage"]
check(pieces and "".join(pieces), "converse_stream: no text")
check(stop is not None, "converse_stream: no messageStop")
check(usage is not None and usage["inputTokens"] > 0, "converse_stream: no metadata usage")
seen["converse_stream"] = "".join(pieces)
seen["usage"].append(["converse_stream", usage["inputTokens"], usage["outputTokens"]])

# --- InvokeModel (Anthropic's body on Bedrock) ---------------------------------------------
body = json.dumps(
    {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "say hello to the vault"}],
    }
)
answer = json.loads(bedrock.invoke_model(modelId=MODEL, body=body, contentType="application/json")["body"].read())
check(answer["content"][0]["text"], "invoke_model: no text")
seen["invoke_model"] = answer["content"][0]["text"]
seen["usage"].append(["invoke_model", answer["usage"]["input_tokens"], answer["usage"]["output_tokens"]])

# --- InvokeModelWithResponseStream ----------------------------------------------------------
texts, metrics = [], None
for event in bedrock.invoke_model_with_response_stream(modelId=MODEL, body=body)["body"]:
    chunk = json.loads(event["chunk"]["bytes"])
    if chunk.get("type") == "content_block_delta":
        texts.append(chunk["delta"].get("text", ""))
    if "amazon-bedrock-invocationMetrics" in chunk:
        metrics = chunk["amazon-bedrock-invocationMetrics"]
check(texts and "".join(texts), "invoke_model_with_response_stream: no text")
check(metrics is not None and metrics["inputTokenCount"] > 0, "invoke_model_with_response_stream: no metrics")
seen["invoke_stream"] = "".join(texts)
seen["usage"].append(["invoke_stream", metrics["inputTokenCount"], metrics["outputTokenCount"]])

# --- A scope denial is boto3's own AccessDeniedException -------------------------------------
denied = client(os.environ["BYOK_DENIED_TOKEN"])
try:
    denied.converse(modelId=MODEL, messages=messages)
    check(False, "the out-of-scope team was served")
except denied.exceptions.AccessDeniedException as err:
    check(err.response["ResponseMetadata"]["HTTPStatusCode"] == 403, "denial is not a 403")
    seen["denied"] = err.response["Error"]["Message"]
    check("team" in seen["denied"], f"the denial does not name the dimension: {seen['denied']}")

# --- An unknown token is refused before any credential is used ------------------------------
stranger = client("byok_not-a-real-token")
try:
    stranger.converse(modelId=MODEL, messages=messages)
    check(False, "an unknown token was served")
except botocore.exceptions.ClientError as err:
    seen["unknown_token"] = [err.response["ResponseMetadata"]["HTTPStatusCode"], err.response["Error"]["Code"]]
    check(err.response["ResponseMetadata"]["HTTPStatusCode"] == 401, "unknown token is not a 401")

print(json.dumps(seen))

// Drive byok with the official Node.js SDKs (`openai` — OpenAI and AzureOpenAI — and
// `@anthropic-ai/sdk`), unchanged except for base URL and key.
//
// Run by crates/byok/tests/node_sdk_e2e.rs, which starts `byok serve` and the mock
// provider and passes in the environment:
//
//   BYOK_PROXY         http://127.0.0.1:PORT
//   BYOK_TOKEN         a workload token of the team the credentials admit
//   BYOK_DENIED_TOKEN  a workload token of a team no credential admits
//
// Prints one JSON object with what each step saw — under "usage", the input and output
// tokens each named call's SDK reported, which the Rust side compares with what byok
// recorded; exits non-zero on the first failure.

import Anthropic from "@anthropic-ai/sdk";
import OpenAI, { AzureOpenAI } from "openai";

const proxy = process.env.BYOK_PROXY;
const token = process.env.BYOK_TOKEN;
const deniedToken = process.env.BYOK_DENIED_TOKEN;
const seen = { node: process.version, usage: {} };

function check(condition, message) {
  if (!condition) {
    console.log(JSON.stringify(seen, null, 2));
    console.error(`FAILED: ${message}`);
    process.exit(1);
  }
}

function reported(callId, inputTokens, outputTokens) {
  seen.usage[callId] = [inputTokens, outputTokens];
}

const callId = (id) => ({ headers: { "x-byok-call-id": id } });

// Expects `call` to fail with the SDK's own PermissionDeniedError; returns the error.
async function denied(call, errorClass, what) {
  try {
    await call();
  } catch (error) {
    check(error instanceof errorClass, `${what}: ${error?.constructor?.name} instead of PermissionDeniedError`);
    check(error.status === 403, `${what}: status ${error.status}`);
    return error;
  }
  check(false, `${what}: a team outside the credential's scope was served`);
  return undefined;
}

// --- OpenAI ---------------------------------------------------------------------------
const oai = new OpenAI({ baseURL: `${proxy}/openai/v1`, apiKey: token, maxRetries: 0 });
const chat = await oai.chat.completions.create(
  { model: "gpt-4o-mini", messages: [{ role: "user", content: "say hello to the vault" }] },
  callId("node-openai-sync"),
);
seen.openai_sync = chat.choices[0].message.content;
check(chat.choices[0].message.content, "OpenAI sync chat returned no content");
check(chat.usage?.prompt_tokens > 0, "OpenAI sync chat has no usage");
reported("node-openai-sync", chat.usage.prompt_tokens, chat.usage.completion_tokens);

let pieces = [];
let usage = null;
const stream = await oai.chat.completions.create(
  {
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "stream a greeting please" }],
    stream: true,
    stream_options: { include_usage: true },
  },
  callId("node-openai-stream"),
);
for await (const chunk of stream) {
  const content = chunk.choices[0]?.delta?.content;
  if (content) pieces.push(content);
  if (chunk.usage) usage = chunk.usage;
}
seen.openai_stream = pieces.join("");
check(pieces.length > 1, "OpenAI stream came in fewer than two pieces");
check(usage?.completion_tokens > 0, "OpenAI stream carried no usage");
reported("node-openai-stream", usage.prompt_tokens, usage.completion_tokens);

const oaiOther = new OpenAI({ baseURL: `${proxy}/openai/v1`, apiKey: deniedToken, maxRetries: 0 });
const openaiDenied = await denied(
  () => oaiOther.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }),
  OpenAI.PermissionDeniedError,
  "OpenAI",
);
seen.openai_denied = { status: openaiDenied.status, code: openaiDenied.code, message: openaiDenied.message };
check(openaiDenied.code === "scope_denied" && openaiDenied.message.includes("team"), "OpenAI denial does not say why");

// --- Azure OpenAI (AzureOpenAI): the deployment is the model; the key goes in api-key --
const azure = new AzureOpenAI({
  endpoint: `${proxy}/azure-openai`,
  apiKey: token,
  apiVersion: "2024-10-21",
  maxRetries: 0,
});
const azChat = await azure.chat.completions.create(
  { model: "gpt-4o-mini", messages: [{ role: "user", content: "say hello to the vault" }] },
  callId("node-azure-sync"),
);
seen.azure_sync = azChat.choices[0].message.content;
check(azChat.usage?.completion_tokens > 0, "Azure sync chat has no usage");
reported("node-azure-sync", azChat.usage.prompt_tokens, azChat.usage.completion_tokens);

pieces = [];
usage = null;
const azStream = await azure.chat.completions.create(
  {
    model: "gpt-4o-mini",
    messages: [{ role: "user", content: "stream a greeting please" }],
    stream: true,
    stream_options: { include_usage: true },
  },
  callId("node-azure-stream"),
);
for await (const chunk of azStream) {
  const content = chunk.choices[0]?.delta?.content;
  if (content) pieces.push(content);
  if (chunk.usage) usage = chunk.usage;
}
seen.azure_stream = pieces.join("");
check(pieces.length > 1, "Azure stream came in fewer than two pieces");
check(usage?.completion_tokens > 0, "Azure stream carried no usage");
reported("node-azure-stream", usage.prompt_tokens, usage.completion_tokens);

const azureOther = new AzureOpenAI({
  endpoint: `${proxy}/azure-openai`,
  apiKey: deniedToken,
  apiVersion: "2024-10-21",
  maxRetries: 0,
});
const azureDenied = await denied(
  () => azureOther.chat.completions.create({ model: "gpt-4o-mini", messages: [{ role: "user", content: "x" }] }),
  OpenAI.PermissionDeniedError,
  "Azure",
);
seen.azure_denied = { status: azureDenied.status, code: azureDenied.code };
check(azureDenied.code === "scope_denied", "Azure denial does not name scope_denied");

// --- Anthropic ------------------------------------------------------------------------
const ant = new Anthropic({ baseURL: `${proxy}/anthropic`, apiKey: token, maxRetries: 0 });
const message = await ant.messages.create(
  { model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user", content: "say hello to the vault" }] },
  callId("node-anthropic-sync"),
);
seen.anthropic_sync = message.content[0].text;
check(message.content[0].text, "Anthropic sync message returned no text");
check(message.usage.input_tokens > 0 && message.usage.output_tokens > 0, "Anthropic usage missing");
reported("node-anthropic-sync", message.usage.input_tokens, message.usage.output_tokens);

const texts = [];
const messageStream = ant.messages.stream(
  { model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user", content: "stream a greeting please" }] },
  callId("node-anthropic-stream"),
);
messageStream.on("text", (text) => texts.push(text));
const final = await messageStream.finalMessage();
seen.anthropic_stream = texts.join("");
check(texts.length > 1, "Anthropic stream came in fewer than two pieces");
check(final.usage.output_tokens > 0, "Anthropic stream carried no usage");
reported("node-anthropic-stream", final.usage.input_tokens, final.usage.output_tokens);

const antOther = new Anthropic({ baseURL: `${proxy}/anthropic`, apiKey: deniedToken, maxRetries: 0 });
const anthropicDenied = await denied(
  () => antOther.messages.create({ model: "claude-sonnet-4-5", max_tokens: 8, messages: [{ role: "user", content: "x" }] }),
  Anthropic.PermissionDeniedError,
  "Anthropic",
);
seen.anthropic_denied = { status: anthropicDenied.status, error: anthropicDenied.error };
check(anthropicDenied.error?.error?.type === "permission_error", "Anthropic 403 is not a permission_error");
check(anthropicDenied.error?.error?.code === "scope_denied", "Anthropic 403 does not name scope_denied");

const bad = new Anthropic({ baseURL: `${proxy}/anthropic`, apiKey: "byok_not-a-real-token", maxRetries: 0 });
try {
  await bad.messages.create({ model: "claude-sonnet-4-5", max_tokens: 8, messages: [{ role: "user", content: "x" }] });
  check(false, "a bad token was accepted by the Anthropic route");
} catch (error) {
  check(error instanceof Anthropic.AuthenticationError, `a bad token raised ${error?.constructor?.name}`);
}

console.log(JSON.stringify(seen, null, 2));

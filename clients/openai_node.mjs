// The openai Node SDK (pinned in package.json): responses.create streamed, and models.retrieve.
//
// Configured only by the environment: OPENAI_BASE_URL = the gateway's /v1, OPENAI_API_KEY = an
// Odock key, ODOCK_MODEL = the model. Prints one PASS/FAIL line per check ("openai-node-responses-
// stream", "openai-node-models-retrieve"); exits 1 if any failed.
import OpenAI from 'openai';

const client = new OpenAI({ maxRetries: 0, timeout: 60_000 });
const model = process.env.ODOCK_MODEL ?? 'gpt-4o-mini';
let failed = false;

const checks = {
  'openai-node-responses-stream': async () => {
    const stream = await client.responses.create({ model, input: 'Say hello.', stream: true });
    const types = [];
    let text = '';
    let completed = null;
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'response.output_text.delta') text += event.delta;
      if (event.type === 'response.completed') completed = event.response;
    }
    if (types[0] !== 'response.created') return `FAIL openai-node-responses-stream: first event ${types[0]}`;
    if (!completed) return `FAIL openai-node-responses-stream: no response.completed (events: ${types.join(',')})`;
    if (!text.trim()) return 'FAIL openai-node-responses-stream: no output_text deltas';
    if (completed.output_text !== undefined && completed.output_text !== text) {
      return 'FAIL openai-node-responses-stream: completed output_text differs from the deltas';
    }
    if (!completed.usage?.total_tokens) return 'FAIL openai-node-responses-stream: no usage on response.completed';
    return `PASS openai-node-responses-stream: ${types.length} events, text ${JSON.stringify(text.slice(0, 40))}`;
  },
  'openai-node-models-retrieve': async () => {
    const found = await client.models.retrieve(model);
    if (found.id !== model) return `FAIL openai-node-models-retrieve: id ${found.id}, expected ${model}`;
    if (found.object !== 'model') return `FAIL openai-node-models-retrieve: object ${found.object}`;
    return `PASS openai-node-models-retrieve: ${found.id} owned by ${found.owned_by}`;
  },
};
for (const [name, check] of Object.entries(checks)) {
  let line;
  try {
    line = await check();
  } catch (error) {
    line = `FAIL ${name}: ${error?.constructor?.name ?? 'Error'}: ${String(error?.message ?? error).slice(0, 400)}`;
  }
  if (line.startsWith('FAIL')) failed = true;
  console.log(line);
}
process.exit(failed ? 1 : 0);

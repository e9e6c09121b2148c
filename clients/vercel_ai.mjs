// Vercel AI SDK (ai + @ai-sdk/openai, pinned in package.json) with the default `openai(model)`
// provider: generateText and streamText, each with one tool round trip.
//
// Configured only by the environment, as an app would be: OPENAI_BASE_URL = the gateway's /v1,
// OPENAI_API_KEY = an Odock key, ODOCK_MODEL = the model. The default provider speaks the
// Responses API. PASS when the tool ran once and the next step produced a non-empty answer.
// Prints one PASS/FAIL line per check ("vercel-generate", "vercel-stream"); exits 1 if any failed.
import { generateText, isStepCount, streamText, tool } from 'ai';
import { openai } from '@ai-sdk/openai';
import { z } from 'zod';

const model = openai(process.env.ODOCK_MODEL ?? 'gpt-4o-mini');

function weatherTool(calls) {
  return tool({
    description: 'Return the weather for a city.',
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      calls.push(city);
      return `It is sunny in ${city}.`;
    },
  });
}

function judge(name, calls, text) {
  if (calls.length !== 1) return `FAIL ${name}: the tool ran ${calls.length} times, expected once`;
  if (!text.trim()) return `FAIL ${name}: empty answer after the tool round trip`;
  return `PASS ${name}: tool ran (${JSON.stringify(calls[0])}), answer ${JSON.stringify(text.slice(0, 60))}`;
}

// The marker makes the scripted fake call the tool (fakes/scripted.py); "weather" does too.
const prompt = 'What is the weather in Paris? [odock-fake-call get_weather {"city": "Paris"}]';
let failed = false;
const checks = {
  'vercel-generate': async () => {
    const calls = [];
    const result = await generateText({
      model, prompt, tools: { get_weather: weatherTool(calls) }, stopWhen: isStepCount(3),
      maxRetries: 0,
    });
    return judge('vercel-generate', calls, result.text);
  },
  'vercel-stream': async () => {
    const calls = [];
    const errors = [];
    const result = streamText({
      model, prompt, tools: { get_weather: weatherTool(calls) }, stopWhen: isStepCount(3),
      maxRetries: 0, onError: ({ error }) => errors.push(error),
    });
    let text = '';
    for await (const delta of result.textStream) text += delta;
    if (errors.length) throw errors[0];
    return judge('vercel-stream', calls, text);
  },
};
for (const [name, check] of Object.entries(checks)) {
  let line;
  try {
    line = await check();
  } catch (error) {
    line = `FAIL ${name}: ${error?.name ?? 'Error'}: ${String(error?.message ?? error).slice(0, 400)}`;
  }
  if (line.startsWith('FAIL')) failed = true;
  console.log(line);
}
process.exit(failed ? 1 : 0);

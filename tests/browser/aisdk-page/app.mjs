// app.mjs — the test page's chat: DefaultChatTransport and
// readUIMessageStream from the `ai` package, as useChat uses them.
// ?token=<JWT>&chat=<chat id>. Shows the assistant message's text in
// #answer (its id in data-message-id) and the state in #status: ready,
// streaming, done, error: <message>. window.resumed counts resumed streams.
import { DefaultChatTransport, readUIMessageStream } from 'ai';

const params = new URLSearchParams(location.search);
const chatId = params.get('chat');
const transport = new DefaultChatTransport({
  api: '/api/ai-sdk/chat',
  headers: { Authorization: `Bearer ${params.get('token')}` },
});
const status = document.getElementById('status');
const answer = document.getElementById('answer');
window.resumed = 0;

async function show(stream) {
  status.textContent = 'streaming';
  try {
    for await (const m of readUIMessageStream({ stream, terminateOnError: true })) {
      answer.textContent = m.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');
      answer.dataset.messageId = m.id;
    }
    status.textContent = 'done';
  } catch (e) {
    status.textContent = `error: ${e.message}`;
  }
}

document.getElementById('send').addEventListener('click', async () => {
  const text = document.getElementById('q').value;
  const messages = [{ id: `u-${Date.now()}`, role: 'user', parts: [{ type: 'text', text }] }];
  await show(await transport.sendMessages({
    chatId, messages, trigger: 'submit-message', messageId: undefined, abortSignal: undefined,
  }));
});

// After a (re)load: the running answer from its start, or nothing (204).
const resumed = await transport.reconnectToStream({ chatId });
if (resumed) {
  window.resumed++;
  await show(resumed);
} else {
  status.textContent = 'ready';
}

// Reads messages (one base64 line each) as a Node.js MCP server does
// (bytes as UTF-8, then JSON.parse) and writes what it read, one JSON line
// each: the method, params.name, uri and taskId, and _meta's keys and
// progressToken (see reading in differential_test.go).
const lines = require('fs').readFileSync(0, 'utf8').split('\n').filter((l) => l !== '');
const str = (v) => {
  if (v === undefined || v === null || v === '') return '';
  if (typeof v === 'string') return 's:' + Array.from(v, (c) => c.codePointAt(0)).join(',');
  if (typeof v === 'number') return 'n:' + String(v);
  return 't:' + (Array.isArray(v) ? 'array' : typeof v);
};
const out = [];
for (const line of lines) {
  let msg;
  try {
    msg = JSON.parse(Buffer.from(line, 'base64').toString('utf8'));
  } catch (e) {
    out.push(JSON.stringify({ parsed: false, err: String(e) }));
    continue;
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    out.push(JSON.stringify({ parsed: false, err: 'not an object' }));
    continue;
  }
  const p = msg.params !== null && typeof msg.params === 'object' && !Array.isArray(msg.params) ? msg.params : {};
  const meta = p._meta !== null && typeof p._meta === 'object' && !Array.isArray(p._meta) ? p._meta : {};
  out.push(JSON.stringify({
    parsed: true,
    method: str(msg.method),
    name: str(p.name),
    uri: str(p.uri),
    taskId: str(p.taskId),
    metaKeys: Object.keys(meta).map(str).sort().join(' '),
    token: str(meta.progressToken),
  }));
}
process.stdout.write(out.join('\n') + '\n');

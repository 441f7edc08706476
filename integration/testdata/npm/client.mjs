// A TypeScript SDK client for tailgate's integration tests: connect to the
// URL in argv[2], list tools, call a long-running tool with progress, end
// the session, and print what it saw as JSON.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const transport = new StreamableHTTPClientTransport(new URL(process.argv[2]));
const client = new Client({ name: "tailgate-ts-test", version: "1.0.0" });
await client.connect(transport);
const out = { session: transport.sessionId, tools: [], progress: [], result: "" };
const { tools } = await client.listTools();
out.tools = tools.map((t) => t.name);
const res = await client.callTool(
  { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 2 } },
  undefined,
  { onprogress: (p) => out.progress.push(p.progress) },
);
out.result = res.content?.[0]?.text ?? "";
await transport.terminateSession();
await client.close();
console.log(JSON.stringify(out));

// Runs the compiled TypeScript example against a fresh atp-native server.
import { spawnSync } from 'node:child_process';
import { startServer } from './lib.mjs';

const server = await startServer('ts.test');
const r = spawnSync(process.execPath, ['out/example.js', server.url], { stdio: 'inherit' });
server.stop();
if (r.status !== 0) throw new Error(`example.js failed (${r.status})\n${server.log()}`);

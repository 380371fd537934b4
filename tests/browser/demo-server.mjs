// Starts the real tokenpush binary the way a new user does: no --users, so it generates the
// demo users and prints their passwords, which we read from its stdout.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const BIN = process.env.TOKENPUSH_BIN || resolve(import.meta.dirname, '../../target/debug/tokenpush');

export class DemoServer {
  /** @param {string[]} args extra flags (none: the demo defaults) */
  constructor(args = []) {
    this.args = args;
    this.dir = mkdtempSync(join(tmpdir(), 'tokenpush-demo-'));
    this.out = '';
    this.passwords = {};
  }

  async start() {
    const args = ['--listen', '127.0.0.1:0', '--data-dir', join(this.dir, 'data'), ...this.args];
    this.proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'info' } });
    this.proc.stderr.on('data', (d) => (this.out += d));
    this.url = await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('server did not start:\n' + this.out)), 30000);
      this.proc.stdout.on('data', (d) => {
        this.out += d;
        const m = /tokenpush listening on (http:\/\/\S+)/.exec(this.out);
        if (m) {
          clearTimeout(timer);
          ok(m[1]);
        }
      });
      this.proc.on('exit', (code) => fail(new Error(`server exited ${code}:\n${this.out}`)));
    });
    for (const m of this.out.matchAll(/^\s+(\w+)\s+password: (\S+)$/gm)) this.passwords[m[1]] = m[2];
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const exited = new Promise((ok) => this.proc.once('exit', ok));
    this.proc.kill('SIGTERM');
    await exited;
  }
}

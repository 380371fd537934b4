// Starts the real tokenpush binary for browser tests: a users file with known passwords,
// short TTLs, an ephemeral port, and a graceful restart on the same port and data dir.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const PASSWORD = 'browser-test-password';
const BIN = resolve(import.meta.dirname, '../../target/debug/tokenpush');

export class Server {
  /** `extraArgs`: more tokenpush flags (e.g. `--allowed-origins`, or `--access-ttl 10s` to replace a default). */
  constructor(extraArgs = []) {
    this.extraArgs = extraArgs;
    this.dir = mkdtempSync(join(tmpdir(), 'tokenpush-browser-'));
    const hash = execFileSync(BIN, ['hash-password'], { input: PASSWORD }).toString().trim();
    this.users = join(this.dir, 'users.toml');
    writeFileSync(this.users, `[[user]]\nname = "alice"\npassword_hash = "${hash}"\nroles = ["admin"]\n\n[[user]]\nname = "bob"\npassword_hash = "${hash}"\nroles = []\n`);
    this.port = 0;
    this.log = '';
  }

  async start() {
    // A flag given in extraArgs replaces its short-TTL default here.
    const defaults = [['--access-ttl', '6s'], ['--renew-lead', '2s'], ['--renew-jitter', '0s'], ['--heartbeat', '2s'], ['--grace', '5s']]
      .filter(([flag]) => !this.extraArgs.includes(flag));
    const args = ['--listen', `127.0.0.1:${this.port}`, '--data-dir', join(this.dir, 'data'), '--users', this.users,
      ...defaults.flat(), ...this.extraArgs];
    this.proc = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stderr.on('data', (d) => (this.log += d));
    this.url = await new Promise((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('server did not start:\n' + this.log)), 20000);
      this.proc.stdout.on('data', (d) => {
        this.log += d;
        const m = /tokenpush listening on (http:\/\/\S+)/.exec(this.log);
        if (m) {
          clearTimeout(timer);
          ok(m[1]);
        }
      });
      this.proc.on('exit', (code) => fail(new Error(`server exited ${code}:\n${this.log}`)));
    });
    this.port = Number(new URL(this.url).port);
  }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    const exited = new Promise((ok) => this.proc.once('exit', ok));
    this.proc.kill('SIGTERM');
    await exited;
  }

  async restart() {
    await this.stop();
    await this.start();
  }

  /** Live sessions as an admin sees them. */
  async sessions(adminAccess) {
    const r = await fetch(this.url + '/admin/sessions', { headers: { Authorization: 'Bearer ' + adminAccess } });
    if (!r.ok) throw new Error(`/admin/sessions ${r.status}`);
    return (await r.json()).sessions;
  }
}

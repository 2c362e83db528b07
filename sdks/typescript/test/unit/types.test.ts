/**
 * The published declarations as consumers compile them: a Node project
 * (no DOM lib, `ws` injected) and a browser project (DOM lib). See
 * test/types/*.ts; `@ts-expect-error` lines there pin the API's typing.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { PACKAGE_ROOT } from '../helpers/processes.js';

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');

function typecheck(project: string): void {
  const run = spawnSync(process.execPath, [tsc, '-p', join(PACKAGE_ROOT, 'test', 'types', project)], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(run.status, 0, `tsc -p test/types/${project} failed:\n${run.stdout}${run.stderr}`);
}

describe('type declarations', () => {
  it('compile for a Node consumer without the DOM lib, with ws injected', () => typecheck('tsconfig.node.json'));
  it('compile for a browser consumer with the DOM lib', () => typecheck('tsconfig.dom.json'));
});

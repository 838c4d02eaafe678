import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { OutputRestoreError, replaceDirectory } from '@rrt/core';
import { prepareOutput } from './output.js';
import { tempDir } from './test-support.js';

// `rename` fails for the (from, to) pairs this predicate accepts; the real one otherwise.
const injected = vi.hoisted(() => ({
  failRename: (_from: string, _to: string): boolean => false,
}));

vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...actual,
    rename: async (from: string, to: string) => {
      if (injected.failRename(from, to)) {
        throw Object.assign(new Error(`injected: EXDEV, rename '${from}' -> '${to}'`), { code: 'EXDEV' });
      }
      return actual.rename(from, to);
    },
  };
});

let workDir: string;
beforeAll(async () => {
  workDir = await tempDir('output');
});
afterAll(async () => {
  await rm(workDir, { recursive: true, force: true });
});

/** A directory holding one file `name` with `text`. */
async function directoryWith(dir: string, name: string, text: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, name), text);
}

describe('committing over an existing output', () => {
  it('replaces it and leaves nothing else beside it', async () => {
    const out = join(workDir, 'replaced');
    await directoryWith(out, 'old.txt', 'old');
    const pending = await prepareOutput(out, true);
    await writeFile(join(pending.tempDir, 'new.txt'), 'new');
    await pending.commit();
    expect(await readdir(out)).toEqual(['new.txt']);
    expect((await readdir(workDir)).filter((name) => name.includes('replaced'))).toEqual(['replaced']);
  });

  it('restores the old output when moving the new one into place fails', async () => {
    const out = join(workDir, 'kept');
    await directoryWith(out, 'old.txt', 'old');
    const pending = await prepareOutput(out, true);
    // The finished directory is gone by the time of the commit: its rename fails (ENOENT).
    await rm(pending.tempDir, { recursive: true });
    await expect(pending.commit()).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readFile(join(out, 'old.txt'), 'utf8')).toBe('old');
    expect((await readdir(workDir)).filter((name) => name.includes('kept'))).toEqual(['kept']);
  });

  it('says where the old output is when restoring it fails too', async () => {
    const from = join(workDir, 'restore-from');
    const target = join(workDir, 'restore-target');
    const aside = join(workDir, 'restore-aside');
    await directoryWith(from, 'new.txt', 'new');
    await directoryWith(target, 'old.txt', 'old');
    injected.failRename = (source) => source === from || source === aside;
    let error: unknown;
    try {
      await replaceDirectory(from, target, aside);
    } catch (caught) {
      error = caught;
    } finally {
      injected.failRename = () => false;
    }
    expect(error).toBeInstanceOf(OutputRestoreError);
    const restore = error as OutputRestoreError;
    expect(restore.aside).toBe(aside);
    expect(restore.message).toContain(aside);
    expect((restore.cause as Error).message).toContain(from);
    expect((restore.restoreError as Error).message).toContain(aside);
    // Nothing was lost: the old output is aside, the new one where it was written.
    expect(await readFile(join(aside, 'old.txt'), 'utf8')).toBe('old');
    expect(await readFile(join(from, 'new.txt'), 'utf8')).toBe('new');
  });
});

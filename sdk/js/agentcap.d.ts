// Types of the agentcap SDK for JavaScript (agentcap.js), over the types
// `jco types` generates from tools-wit (types/, `npm run types`), and the
// modules a tool imports (`agentcap:tools/<interface>@0.1.0`).

import type {
  Denial,
  DenialReason,
  Intent as IntentRecord,
  Token,
} from './types/interfaces/agentcap-tools-consent.js';

declare module 'agentcap:tools/consent@0.1.0' {
  export * from './types/interfaces/agentcap-tools-consent.js';
}
declare module 'agentcap:tools/mail@0.1.0' {
  export * from './types/interfaces/agentcap-tools-mail.js';
}
declare module 'agentcap:tools/forum@0.1.0' {
  export * from './types/interfaces/agentcap-tools-forum.js';
}
declare module 'agentcap:tools/data@0.1.0' {
  export * from './types/interfaces/agentcap-tools-data.js';
}
declare module 'agentcap:tools/files@0.1.0' {
  export * from './types/interfaces/agentcap-tools-files.js';
}

export type { Denial, DenialReason, Token };

/**
 * What the tool asks to do.
 *
 * mail:
 *   const token = request(new Intent('mail.delete').targets(ids).summary('old promotions'));
 *   mail.delete(token, token.targets()); // only the approved subset
 * forum (bound to the exact body; the host adds the AI label):
 *   const token = request(new Intent('forum.post').target(String(thread)).payload(body));
 *   forum.post(token, BigInt(thread), body);
 * data (bound to the exact SQL, naming the tables it reads):
 *   const token = request(new Intent('data.query').target('service_metrics').payload(sql));
 *   data.query(token, sql, []);
 * files (a write is bound to its exact content):
 *   const token = request(new Intent('files.write').target('notes:index.md').payload(text));
 *   files.write(token, 'notes:index.md', text);
 * http: build with fetch enabled (no `-d http`); the host asks per request.
 */
export declare class Intent {
  constructor(capability: string);
  /** The WIT record this builder produced. */
  readonly record: IntentRecord;
  /** The targets the action touches (message ids, folders, threads, ...). */
  targets(targets: Iterable<string>): this;
  /** Add one target. */
  target(target: string): this;
  /** The exact content of the action (a post body, a query, a file). */
  payload(payload: string): this;
  /** The tool's own explanation, shown to the person as its claim. */
  summary(summary: string): this;
}

/** Consent was not given; `message` reads `consent declined: ...`. */
export declare class Denied extends Error {
  readonly reason: DenialReason;
  /** The host's words, naming what was refused and why. */
  readonly hostMessage: string;
  explain(): string;
}

/** Ask for consent; throws {@link Denied} when it is not given. */
export declare function request(intent: Intent): Token;

/** One line naming what was refused and why (`refused: ...`). */
export declare function explain(error: unknown): string;

/**
 * Wrap an exported function that returns `result<T, string>`: a refusal or
 * a capability's error becomes its `err` with the host's words.
 */
export declare function toolFunction<A extends unknown[], R>(
  fn: (...args: A) => R,
): (...args: A) => R;

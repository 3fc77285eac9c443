/** @module Interface agentcap:tools/consent@0.1.0 **/
/**
 * Ask for consent. Blocks until a decision (human or policy) is made.
 */
export function request(intent: Intent): Token;
/**
 * What a tool asks to do.
 */
export interface Intent {
  /**
   * The action, `<interface>.<function>`, e.g. `mail.delete`.
   */
  capability: string,
  /**
   * What the action touches: message ids for mail, folder names for
   * `mail.list`.
   */
  targets: Array<string>,
  /**
   * The exact content for actions that carry content (a post body, a
   * query). `none` for actions without content.
   */
  payload?: string,
  /**
   * The tool's own description of why. Shown to the human only as the
   * tool's claim, next to the host's own description of the action.
   */
  summary: string,
}
/**
 * Why a request was not granted.
 * # Variants
 * 
 * ## `"declined"`
 * 
 * A human refused.
 * ## `"timed-out"`
 * 
 * Nobody answered in time; silence is a refusal.
 * ## `"stopped"`
 * 
 * The session was stopped.
 * ## `"not-granted"`
 * 
 * The operator's policy does not grant this capability or scope.
 * ## `"invalid"`
 * 
 * The intent itself is malformed (unknown capability, bad target).
 */
export type DenialReason = 'declined' | 'timed-out' | 'stopped' | 'not-granted' | 'invalid';
/**
 * A refusal, with a message that names what was refused and why.
 */
export interface Denial {
  reason: DenialReason,
  message: string,
}

export class Token {
  /**
   * This type does not have a public constructor.
   */
  private constructor();
  /**
  * The capability this token is for, e.g. `mail.delete`.
  */
  capability(): string;
  /**
  * The approved targets (may be a subset of those requested).
  */
  targets(): Array<string>;
  /**
  * The approved payload, if the action carries content.
  */
  payload(): string | undefined;
  /**
  * Expiry, milliseconds since the Unix epoch.
  */
  expiresAtMs(): bigint;
  /**
  * Calls this token still allows.
  */
  usesLeft(): number;
}

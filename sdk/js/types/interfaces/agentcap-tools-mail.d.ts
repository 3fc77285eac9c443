/** @module Interface agentcap:tools/mail@0.1.0 **/
/**
 * List a folder (`INBOX`, `Archive`, `Trash`, ...). Needs `mail.list`.
 */
export function list(token: Token, folder: string): Array<MessageSummary>;
/**
 * Read one message. Needs `mail.read` covering `id`.
 */
export function read(token: Token, id: string): Message;
/**
 * Move messages to `Archive`. Needs `mail.archive` covering every id.
 * Returns the new ids.
 */
export function archive(token: Token, ids: Array<string>): Array<string>;
/**
 * Move messages to `Trash` (recoverable; nothing is unlinked). Needs
 * `mail.delete` covering every id. Returns the new ids.
 */
export { _delete as delete };
function _delete(token: Token, ids: Array<string>): Array<string>;
export type Token = import('./agentcap-tools-consent.js').Token;
/**
 * One message as seen in a listing. `id` is `<folder>/<unique-name>`.
 */
export interface MessageSummary {
  id: string,
  folder: string,
  from: string,
  subject: string,
  /**
   * RFC 3339 date from the Date header, or "" when missing.
   */
  date: string,
  /**
   * Whether the message carries a List-Unsubscribe or List-Id header.
   */
  isListMail: boolean,
  seen: boolean,
  size: bigint,
}
/**
 * A whole message, decoded.
 */
export interface Message {
  summary: MessageSummary,
  to: string,
  /**
   * The text body (plain text, or text derived from HTML).
   */
  body: string,
}
/**
 * Why a mail call failed.
 */
export type MailError = MailErrorRefused | MailErrorNotFound | MailErrorInvalid | MailErrorBackend;
/**
 * The Gate refused the call: the message names the token state or
 * the scope that was exceeded.
 */
export interface MailErrorRefused {
  tag: 'refused',
  val: string,
}
/**
 * No such folder or message.
 */
export interface MailErrorNotFound {
  tag: 'not-found',
  val: string,
}
/**
 * A malformed argument (bad id, bad folder name).
 */
export interface MailErrorInvalid {
  tag: 'invalid',
  val: string,
}
/**
 * The mail store failed.
 */
export interface MailErrorBackend {
  tag: 'backend',
  val: string,
}

/** @module Interface agentcap:tools/forum@0.1.0 **/
/**
 * List threads. Needs `forum.list-threads` for target `threads`.
 */
export function listThreads(token: Token): Array<ThreadSummary>;
/**
 * Read a thread. Needs `forum.read-thread` covering `thread`.
 */
export function readThread(token: Token, thread: bigint): Thread;
/**
 * Reply to a thread. Needs `forum.post` for `thread` whose approved
 * payload is exactly `body`. Returns the post as published.
 */
export function post(token: Token, thread: bigint, body: string): ForumPost;
export type Token = import('./agentcap-tools-consent.js').Token;
/**
 * One post.
 */
export interface ForumPost {
  id: bigint,
  thread: bigint,
  author: string,
  /**
   * As stored, label included for AI-written posts.
   */
  body: string,
  created: string,
  /**
   * Whether the host stamped it as AI-generated.
   */
  aiGenerated: boolean,
}
/**
 * A thread with its posts, oldest first.
 */
export interface Thread {
  id: bigint,
  title: string,
  author: string,
  posts: Array<ForumPost>,
}
/**
 * A thread as listed.
 */
export interface ThreadSummary {
  id: bigint,
  title: string,
  author: string,
  replies: number,
}
/**
 * Why a forum call failed.
 */
export type ForumError = ForumErrorRefused | ForumErrorNotFound | ForumErrorInvalid | ForumErrorBackend;
/**
 * The Gate refused (token state, scope, or a body that differs from
 * the approved one).
 */
export interface ForumErrorRefused {
  tag: 'refused',
  val: string,
}
export interface ForumErrorNotFound {
  tag: 'not-found',
  val: string,
}
export interface ForumErrorInvalid {
  tag: 'invalid',
  val: string,
}
export interface ForumErrorBackend {
  tag: 'backend',
  val: string,
}

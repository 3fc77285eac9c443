/** @module Interface agentcap:tools/files@0.1.0 **/
/**
 * The entries of `folder` (files outside the grant's paths are left out).
 */
export function list(token: Token, folder: string): Array<Entry>;
/**
 * Up to `length` bytes of `path` from `offset`.
 */
export function read(token: Token, path: string, offset: bigint, length: bigint): Uint8Array;
/**
 * Create or replace `path` with exactly `content` (the approved
 * payload); a replaced file's old version goes to the trash. Returns
 * the bytes written.
 */
export function write(token: Token, path: string, content: string): bigint;
/**
 * Move each `from -> to` pair (each must be approved); returns the
 * pairs moved.
 */
export function move(token: Token, moves: Array<string>): Array<string>;
/**
 * Move each file to its root's trash; returns the restore handles
 * (`notes#<id>`, for `agentcap files restore`).
 */
export { _delete as delete };
function _delete(token: Token, paths: Array<string>): Array<string>;
export type Token = import('./agentcap-tools-consent.js').Token;
/**
 * One entry of a folder.
 */
export interface Entry {
  /**
   * `root:relative/path`.
   */
  path: string,
  isDir: boolean,
  /**
   * Size in bytes (0 for folders).
   */
  size: bigint,
  /**
   * Last modification, milliseconds since the Unix epoch (0 if unknown).
   */
  modifiedMs: bigint,
}
/**
 * Why a file operation failed.
 */
export type FilesError = FilesErrorRefused | FilesErrorNotFound | FilesErrorInvalid | FilesErrorTooLarge | FilesErrorBackend;
/**
 * The Gate or the scope check refused; names the path and why.
 */
export interface FilesErrorRefused {
  tag: 'refused',
  val: string,
}
export interface FilesErrorNotFound {
  tag: 'not-found',
  val: string,
}
export interface FilesErrorInvalid {
  tag: 'invalid',
  val: string,
}
/**
 * Over the operator's size limit; names the limit.
 */
export interface FilesErrorTooLarge {
  tag: 'too-large',
  val: string,
}
export interface FilesErrorBackend {
  tag: 'backend',
  val: string,
}

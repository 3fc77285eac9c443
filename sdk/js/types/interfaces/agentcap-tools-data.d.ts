/** @module Interface agentcap:tools/data@0.1.0 **/
/**
 * Run `sql` (exactly the approved payload) with positional `params`
 * bound as text values.
 */
export function query(token: Token, sql: string, params: Array<string>): Rows;
export type Token = import('./agentcap-tools-consent.js').Token;
/**
 * One value of a result row.
 */
export type Value = ValueNull | ValueInteger | ValueReal | ValueText | ValueBlob;
export interface ValueNull {
  tag: 'null',
}
export interface ValueInteger {
  tag: 'integer',
  val: bigint,
}
export interface ValueReal {
  tag: 'real',
  val: number,
}
export interface ValueText {
  tag: 'text',
  val: string,
}
export interface ValueBlob {
  tag: 'blob',
  val: Uint8Array,
}
/**
 * A query result.
 */
export interface Rows {
  columns: Array<string>,
  rows: Array<Array<Value>>,
  /**
   * Whether the grant's row limit cut the result short.
   */
  truncated: boolean,
}
/**
 * Why a query failed.
 */
export type DataError = DataErrorRefused | DataErrorInvalid | DataErrorBackend;
/**
 * The Gate or the scope check refused; names the table or action.
 */
export interface DataErrorRefused {
  tag: 'refused',
  val: string,
}
export interface DataErrorInvalid {
  tag: 'invalid',
  val: string,
}
export interface DataErrorBackend {
  tag: 'backend',
  val: string,
}

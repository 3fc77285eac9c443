// agentcap SDK for tools written in JavaScript (built with componentize-js).
//
// A tool is a WebAssembly component built against the WIT contract in
// tools-wit/wit. It gets authority only by asking for it: `request` describes
// the action as an `Intent`; the host shows the action to a person (or applies
// the operator's standing grant) and hands back a token that covers exactly
// what was approved, maybe a subset. Every capability function takes that
// token. Types: agentcap.d.ts, over types/ (generated with `jco types`).

import { request as witRequest } from 'agentcap:tools/consent@0.1.0';

const REASONS = {
  declined: 'declined',
  'timed-out': 'timed out',
  stopped: 'stopped',
  'not-granted': 'not granted',
  invalid: 'invalid',
};

const KINDS = {
  refused: 'refused',
  'not-found': 'not found',
  invalid: 'invalid',
  'too-large': 'too large',
  backend: 'backend error',
};

/** What the tool asks to do (see agentcap.d.ts). */
export class Intent {
  constructor(capability) {
    this.record = { capability, targets: [], payload: undefined, summary: '' };
  }

  targets(targets) {
    this.record.targets = Array.from(targets, String);
    return this;
  }

  target(target) {
    this.record.targets.push(String(target));
    return this;
  }

  payload(payload) {
    this.record.payload = payload;
    return this;
  }

  summary(summary) {
    this.record.summary = summary;
    return this;
  }
}

/** Consent was not given: `reason` and the host's `message`. */
export class Denied extends Error {
  constructor(denial) {
    super(`consent ${REASONS[denial.reason] ?? denial.reason}: ${denial.message}`);
    this.name = 'Denied';
    this.reason = denial.reason;
    this.hostMessage = denial.message;
  }

  explain() {
    return this.message;
  }
}

/** Ask for consent; blocks until a person or a standing grant decides. */
export function request(intent) {
  try {
    return witRequest(intent.record);
  } catch (error) {
    if (error && error.payload && typeof error.payload.reason === 'string') {
      throw new Denied(error.payload);
    }
    throw error;
  }
}

/** One line naming what was refused and why, like the Rust SDK's `explain`. */
export function explain(error) {
  if (error instanceof Denied) {
    return error.message;
  }
  const value = error && error.payload !== undefined ? error.payload : error;
  if (value && typeof value.tag === 'string' && typeof value.val === 'string') {
    return `${KINDS[value.tag] ?? value.tag}: ${value.val}`;
  }
  if (value && typeof value.reason === 'string' && typeof value.message === 'string') {
    return new Denied(value).message;
  }
  return String(error instanceof Error ? error.message : error);
}

/**
 * Wrap an exported function that returns `result<T, string>`: a refusal or a
 * capability's error becomes the function's `err` with the host's words.
 */
export function toolFunction(fn) {
  return function (...args) {
    try {
      return fn.apply(this, args);
    } catch (error) {
      throw explain(error);
    }
  };
}

/**
 * prom-client's classes the shim uses, required from their own files: its index also loads the cluster aggregator
 * (node:cluster), the push gateway (http, https), the default metrics and Summary's t-digest, which the daemon never
 * uses and which cost every pod's shim about 4 MiB (bench/footprint.ts). Types are the package's own.
 */
/* eslint-disable @typescript-eslint/no-require-imports -- prom-client has no typed entry for its classes' files */
import type * as PromClient from 'prom-client';

export const Registry = require('prom-client/lib/registry') as typeof PromClient.Registry;
export const Counter = require('prom-client/lib/counter') as typeof PromClient.Counter;
export const Gauge = require('prom-client/lib/gauge') as typeof PromClient.Gauge;
export const Histogram = require('prom-client/lib/histogram') as typeof PromClient.Histogram;
export type Registry = PromClient.Registry;
export type Counter<T extends string = string> = PromClient.Counter<T>;
export type Gauge<T extends string = string> = PromClient.Gauge<T>;
export type Histogram<T extends string = string> = PromClient.Histogram<T>;

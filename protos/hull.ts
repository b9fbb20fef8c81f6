/**
 * hull's own extension of the agent protocol (`hull.agent.v1.Diagnostics`, protos/proto/hull/): guest facts Kata's
 * API has no field for, and a bounded read of a file in the shared folder. Generated classes come from
 * protos/gen/hull (root `hull`).
 */
import './int64'; // must run before the generated module loads
import { protobufMethod } from 'ttrpc-ts';
import { hull } from './gen/hull';

export import diagnostics = hull.agent.v1;

export const DIAGNOSTICS_SERVICE = 'hull.agent.v1.Diagnostics';

export const DiagnosticsService = {
  GuestInfo: protobufMethod(DIAGNOSTICS_SERVICE, 'GuestInfo', diagnostics.GuestInfoRequest, diagnostics.GuestInfoResponse),
  ReadFile: protobufMethod(DIAGNOSTICS_SERVICE, 'ReadFile', diagnostics.ReadFileRequest, diagnostics.ReadFileResponse),
};

// Which failures of a compute host's tools a retry can fix. A retry of a deterministic refusal (a
// domain QEMU cannot start, a corrupt disk) only holds the instance claimed until the attempts run
// out; a retry of a transient one (libvirtd restarting, an image lock held for a moment) succeeds.
import { LibvirtError } from '@unraid/libvirt';
import { QemuImgError } from './qemu-img.js';

/** libvirt's virErrorNumber (libvirt/virterror.h): the codes this project tells apart. */
export enum LibvirtErrorCode {
  UNKNOWN = -1,
  INTERNAL_ERROR = 1,
  NO_MEMORY = 2,
  NO_SUPPORT = 3,
  NO_CONNECT = 5,
  INVALID_CONN = 6,
  INVALID_ARG = 8,
  OPERATION_FAILED = 9,
  XML_ERROR = 27,
  DOM_EXIST = 28,
  OPERATION_DENIED = 29,
  XML_DETAIL = 35,
  SYSTEM_ERROR = 38,
  RPC = 39,
  NO_DOMAIN = 42,
  NO_STORAGE_POOL = 49,
  NO_STORAGE_VOL = 50,
  OPERATION_INVALID = 55,
  CONFIG_UNSUPPORTED = 67,
  OPERATION_TIMEOUT = 68,
  ARGUMENT_UNSUPPORTED = 74,
  OPERATION_ABORTED = 78,
  OPERATION_UNSUPPORTED = 84,
  AGENT_UNRESPONSIVE = 86,
  RESOURCE_BUSY = 87,
  ACCESS_DENIED = 88,
  CPU_INCOMPATIBLE = 91,
  XML_INVALID_SCHEMA = 92,
}

/**
 * The message prefixes libvirt writes for each code (virErrorMsgStrings in util/virerror.c,
 * untranslated: the workers run in the C locale). Codes whose messages carry no prefix of their own
 * (SYSTEM_ERROR, RPC, XML_DETAIL) are not here.
 */
const PREFIXES: [RegExp, LibvirtErrorCode][] = [
  [/^internal error\b/, LibvirtErrorCode.INTERNAL_ERROR],
  [/^out of memory\b/, LibvirtErrorCode.NO_MEMORY],
  [/^this function is not supported by the connection driver\b/, LibvirtErrorCode.NO_SUPPORT],
  [/^no connection driver available\b/, LibvirtErrorCode.NO_CONNECT],
  [/^invalid connection pointer\b/, LibvirtErrorCode.INVALID_CONN],
  [/^invalid argument\b/, LibvirtErrorCode.INVALID_ARG],
  [/^operation failed\b/, LibvirtErrorCode.OPERATION_FAILED],
  [/^XML error\b/, LibvirtErrorCode.XML_ERROR],
  [/^domain .* exists already$/s, LibvirtErrorCode.DOM_EXIST],
  [/^operation forbidden\b/, LibvirtErrorCode.OPERATION_DENIED],
  [/^Domain not found\b/, LibvirtErrorCode.NO_DOMAIN],
  [/^Storage pool not found\b/, LibvirtErrorCode.NO_STORAGE_POOL],
  [/^Storage volume not found\b/, LibvirtErrorCode.NO_STORAGE_VOL],
  [/^Requested operation is not valid\b/, LibvirtErrorCode.OPERATION_INVALID],
  [/^unsupported configuration\b/, LibvirtErrorCode.CONFIG_UNSUPPORTED],
  [/^Timed out during operation\b/, LibvirtErrorCode.OPERATION_TIMEOUT],
  [/^argument unsupported\b/, LibvirtErrorCode.ARGUMENT_UNSUPPORTED],
  [/^operation aborted\b/, LibvirtErrorCode.OPERATION_ABORTED],
  [/^Operation not supported\b/, LibvirtErrorCode.OPERATION_UNSUPPORTED],
  [/^Guest agent is not responding\b/, LibvirtErrorCode.AGENT_UNRESPONSIVE],
  [/^resource busy\b/, LibvirtErrorCode.RESOURCE_BUSY],
  [/^access denied\b/, LibvirtErrorCode.ACCESS_DENIED],
  [/^the CPU is incompatible with host CPU\b/, LibvirtErrorCode.CPU_INCOMPATIBLE],
  [/^XML document failed to validate against schema\b/, LibvirtErrorCode.XML_INVALID_SCHEMA],
];

/**
 * The libvirt error code of a failure. @unraid/libvirt's native layer rejects with the message of
 * virGetLastError() alone, so its LibvirtError's `code` is always -1: the code is read from the
 * prefix libvirt puts before each message instead, and is UNKNOWN where no prefix matches.
 */
export function libvirtErrorCode(error: LibvirtError): LibvirtErrorCode {
  if (error.code > 0) return error.code;
  return PREFIXES.find(([prefix]) => prefix.test(error.message))?.[1] ?? LibvirtErrorCode.UNKNOWN;
}

/**
 * The connection to libvirtd lost or never made: a SYSTEM_ERROR or RPC error on its socket (these
 * have no prefix), or libvirt's own words for a closed connection, whatever the code.
 */
const CONNECTION_LOST =
  /Cannot (write|recv) data|Failed to connect socket|client socket is closed|connection closed due to keepalive|End of file while reading data|unable to connect to server|Connection reset by peer|Broken pipe|no connection driver available|invalid connection pointer/i;

/** Deterministic refusals: the same definition, disk or host fails the same way next time. */
const LIBVIRT_PERMANENT = new Set<LibvirtErrorCode>([
  // QEMU refused the domain or exited while starting ("process exited while connecting to
  // monitor", "cannot set up guest memory").
  LibvirtErrorCode.INTERNAL_ERROR,
  LibvirtErrorCode.NO_MEMORY,
  LibvirtErrorCode.NO_SUPPORT,
  LibvirtErrorCode.INVALID_ARG,
  LibvirtErrorCode.OPERATION_FAILED,
  LibvirtErrorCode.XML_ERROR,
  LibvirtErrorCode.DOM_EXIST,
  LibvirtErrorCode.OPERATION_DENIED,
  LibvirtErrorCode.NO_STORAGE_POOL,
  LibvirtErrorCode.NO_STORAGE_VOL,
  LibvirtErrorCode.CONFIG_UNSUPPORTED,
  LibvirtErrorCode.ARGUMENT_UNSUPPORTED,
  LibvirtErrorCode.OPERATION_UNSUPPORTED,
  LibvirtErrorCode.ACCESS_DENIED,
  LibvirtErrorCode.CPU_INCOMPATIBLE,
  LibvirtErrorCode.XML_INVALID_SCHEMA,
]);

/** qemu-img's words for an image in use by another process (a domain still running on it). */
const QEMU_IMG_LOCKED = /Failed to get (shared )?"\w+" lock|Is another process using the image/;

/** qemu-img's words for an image or a request that will fail the same way again. */
const QEMU_IMG_PERMANENT =
  /Could not open|Image is not in \w+ format|is corrupt|Unknown driver|Invalid (image )?format|Unknown protocol|Invalid parameter|Image size must be|Backing file .* not found|Could not (create|resize)|Permission denied|Operation not supported/;

/** A failure a host's disk fills up with: the disk does not empty itself. */
export function isDiskFull(error: Error): boolean {
  return /No space left on device|ENOSPC/.test(`${error.message} ${String(error.cause)}`);
}

export interface HostErrorClass {
  /** The ApplicationFailure type the failure is raised as. */
  type: 'HypervisorRefused' | 'HypervisorUnavailable' | 'DiskToolFailed' | 'DiskLocked' | 'HostDiskFull';
  retryable: boolean;
  /** The tool's own reason, as it gave it. */
  reason: string;
}

/**
 * Sorts a failure of libvirt, qemu-img or the host's disk into retryable and not; null for any
 * other failure, which is left as it is. An error neither list knows stays retryable: the
 * activity's bounded attempts still end it.
 */
export function classifyHostError(error: unknown): HostErrorClass | null {
  if (!(error instanceof Error)) return null;
  const reason = error.message;
  if (error instanceof LibvirtError) {
    if (CONNECTION_LOST.test(reason)) return { type: 'HypervisorUnavailable', retryable: true, reason };
    return LIBVIRT_PERMANENT.has(libvirtErrorCode(error))
      ? { type: 'HypervisorRefused', retryable: false, reason }
      : { type: 'HypervisorUnavailable', retryable: true, reason };
  }
  if (isDiskFull(error)) return { type: 'HostDiskFull', retryable: false, reason };
  if (error instanceof QemuImgError) {
    // The binary missing from the host: no retry installs it.
    if (error.systemError === 'ENOENT') return { type: 'DiskToolFailed', retryable: false, reason };
    // Killed (by a signal, or because the activity was cancelled): the image itself is not at fault.
    if (error.exitCode === null) return { type: 'DiskToolFailed', retryable: true, reason };
    if (QEMU_IMG_LOCKED.test(error.stderr)) return { type: 'DiskLocked', retryable: true, reason };
    return { type: 'DiskToolFailed', retryable: !QEMU_IMG_PERMANENT.test(error.stderr), reason };
  }
  return null;
}

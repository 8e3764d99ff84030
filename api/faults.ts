// Errors in Nova's shape: {"<fault name>": {"code": …, "message": …}}.
export type FaultCode = 400 | 401 | 403 | 404 | 406 | 409 | 413 | 500 | 503;

export const FAULT_NAMES: Record<FaultCode, string> = {
  400: 'badRequest',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'itemNotFound',
  406: 'notAcceptable',
  409: 'conflictingRequest',
  413: 'overLimit',
  500: 'computeFault',
  503: 'serviceUnavailable',
};

export class ApiFault extends Error {
  constructor(
    readonly code: FaultCode,
    message: string,
  ) {
    super(message);
  }

  body(): Record<string, { code: number; message: string }> {
    return { [FAULT_NAMES[this.code]]: { code: this.code, message: this.message } };
  }
}

/** HTTP status of the failures the claim and the scheduler raise (Nova's API error mapping). */
export const FAULT_CODE_OF_FAILURE: Record<string, FaultCode> = {
  InstanceNotFound: 404,
  InstanceInvalidState: 409,
  UnexpectedTaskState: 409,
  UnshelveInstanceInvalidState: 409,
  UnshelveHostNotInAZ: 409,
  ComputeHostNotFound: 400,
  InvalidRequest: 400,
};

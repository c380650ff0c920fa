export {
  consume,
  PermanentError,
  type AmeboEvent,
  type ConsumeOptions,
  type Consumer,
  type Handler,
  type HandlerContext,
} from './consume.js';

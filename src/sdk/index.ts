export {
  consume,
  PermanentError,
  type AmeboEvent,
  type ConsumeOptions,
  type Consumer,
  type ConsumerEvents,
  type Settlement,
  type Handler,
  type HandlerContext,
} from './consume.js';

// Preloaded into supergateway (node --require loopback.cjs ...), which has
// no flag for the address it listens on and listens on every interface:
// a server that listens on a port without naming a host listens on
// 127.0.0.1 instead, so the bench exposes nothing beyond the machine.
'use strict';
const net = require('node:net');

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const [first] = args;
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    // listen(port[, host][, backlog][, callback])
    if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  } else if (first && typeof first === 'object' && !(first instanceof net.Server) && first.path === undefined && first.host === undefined) {
    // listen(options[, callback])
    args[0] = { ...first, host: '127.0.0.1' };
  }
  return listen.apply(this, args);
};

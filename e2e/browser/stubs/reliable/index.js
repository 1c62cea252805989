// Placeholder: see package.json. Nothing in the browser tests loads this module.
throw new Error('reliable: placeholder package, load peerjs-legacy/dist/peer.min.js instead');

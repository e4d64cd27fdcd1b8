'use strict'
/**
 * A stand-in for `python -m swarm node` in tests/deepstream/plugin_unit.js (the supervised mode without
 * Python): run as `node fake_node.js -m swarm node --config FILE --log-level L`, it reads the config the
 * plugin wrote, serves the bridge's handshake on its unix socket (welcome, ready), prints `listening`,
 * `bridge` and `ready` like swarm's cli, and exits when its stdin ends (exitOnStdinClose) or on SIGTERM.
 * FAKE_NODE_MODE=crash: it prints a line on stderr and exits 1 at once instead.
 */

const fs = require('fs')
const net = require('net')

const config = JSON.parse(fs.readFileSync(process.argv[process.argv.indexOf('--config') + 1], 'utf8'))
const options = config.plugins.message.options
if (process.env.FAKE_NODE_MODE === 'crash') {
  process.stderr.write('swarm: error: a scripted crash\n')
  process.exit(1)
}
process.stderr.write(JSON.stringify({ level: 'WARNING', message: `fake node ${config.serverName} up`, node: config.serverName }) + '\n')

try { fs.unlinkSync(options.bridge) } catch (error) {} // left by a killed predecessor, as swarm clears it
const server = net.createServer((socket) => {
  socket.on('error', () => {})
  socket.once('data', () => {
    const body = Buffer.from(JSON.stringify({ op: 'welcome', version: 1, serverName: config.serverName, ready: true }))
    const head = Buffer.alloc(4)
    head.writeUInt32BE(body.length)
    socket.write(Buffer.concat([head, body]))
  })
})
server.listen(options.bridge, () => {
  process.stdout.write(`listening ${config.serverName} 127.0.0.1:${options.port}\nbridge ${options.bridge}\nready ${config.serverName}\n`)
})
function stop () {
  server.close()
  process.exit(0)
}
if (options.exitOnStdinClose === true) {
  process.stdin.on('end', stop)
  process.stdin.resume()
}
process.on('SIGTERM', stop)

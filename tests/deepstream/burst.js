'use strict'
/**
 * One server's side of a burst through the bridge, with the plugin of integrations/deepstream driven
 * directly (no deepstream): the plugin `send`s `count` events of `size` bytes on topic 4 (EVENT), in
 * batches of `batch` per turn of the event loop (as deepstream hands on what a websocket read brought),
 * and counts what it receives from each other server, checking that each origin's sequence numbers
 * arrive in order and without duplicates. `workUs` makes it a server slower than the traffic: that many
 * microseconds of work in its thread for each message received, as deepstream's own handling would.
 *
 * Run by tests/test_deepstream.py, one process per server: `node burst.js '<json>'` with {name, bridge,
 * peers: [serverName], count, size, batch, startAt (epoch ms: every process starts its burst then),
 * quietMs, timeoutMs, workUs}. It prints one JSON line: {name, sent, received: {origin: n}, disorder,
 * warnings: [text], ms}. The warnings are what the plugin would log in deepstream, its loss reports
 * among them; the caller checks that what is missing is exactly what they report.
 */

const path = require('path')

const SwarmClusterNode = require(path.join(__dirname, '..', '..', 'integrations', 'deepstream'))

const TOPIC = 4

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function main () {
  const config = JSON.parse(process.argv[2])
  const received = {}
  const last = {}
  const disorder = []
  const warnings = []
  let lastProgress = Date.now()
  const log = (level) => (event, text) => {
    if (level === 'warn' || level === 'error') warnings.push(text)
  }
  const logger = { debug () {}, info () {}, warn: log('warn'), error: log('error'), fatal: log('error') }
  const node = new SwarmClusterNode({ bridge: config.bridge }, { logger }, { serverName: config.name })
  const work = config.workUs || 0
  node.subscribe(TOPIC, (message, origin) => {
    if (work) {
      const until = process.hrtime.bigint() + BigInt(Math.round(work * 1000))
      while (process.hrtime.bigint() < until);
    }
    received[origin] = (received[origin] || 0) + 1
    const previous = last[origin]
    if (previous !== undefined && message.seq <= previous && disorder.length < 10) {
      disorder.push(`${config.name} got ${origin}#${message.seq} after #${previous}`)
    }
    last[origin] = message.seq
    lastProgress = Date.now()
  })
  await node.whenReady()
  await sleep(Math.max(0, config.startAt - Date.now()))

  const started = Date.now()
  const pad = 'x'.repeat(Math.max(0, config.size - 40))
  let sent = 0
  await new Promise((resolve) => {
    const step = () => {
      for (let i = 0; i < config.batch && sent < config.count; i++) {
        node.send({ topic: TOPIC, action: 1, name: 'burst', seq: sent, data: pad })
        sent += 1
      }
      if (sent < config.count) setImmediate(step); else resolve()
    }
    step()
  })
  lastProgress = Date.now()
  const expected = config.count * config.peers.length
  const total = () => Object.values(received).reduce((a, b) => a + b, 0)
  while (total() < expected && Date.now() - lastProgress < config.quietMs && Date.now() - started < config.timeoutMs) {
    await sleep(20)
  }
  const ms = Date.now() - started
  // loss reports come at most once a second: give the last one time to arrive
  if (total() < expected) await sleep(config.reportMs || 1500)
  await node.close()
  process.stdout.write(JSON.stringify({ name: config.name, sent, received, disorder, warnings, ms }) + '\n')
}

main().catch((error) => {
  process.stderr.write(`${error && error.stack}\n`)
  process.exit(1)
})

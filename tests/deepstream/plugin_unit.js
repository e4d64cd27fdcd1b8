'use strict'
/**
 * The plugin of integrations/deepstream against a scripted fake sidecar (Node built-ins only): the
 * handshake, whenReady, subscriptions and re-subscription, delivery, the bounded queue, reconnection,
 * refusals, close; and the supervised mode's options and its node's life (start, restart with backoff,
 * stop, private directory) with tests/deepstream/fake_node.js standing in for Python. Run by tests/test_deepstream.py: `node tests/deepstream/plugin_unit.js`; exits 0 when
 * every case passes, prints `ok <case>` per case.
 */

const assert = require('assert')
const fs = require('fs')
const net = require('net')
const path = require('path')

const SwarmClusterNode = require(path.join(__dirname, '..', '..', 'integrations', 'deepstream'))
const { parseBridgeAddress, FrameReader } = SwarmClusterNode

const CASE_TIMEOUT = 10000

function frame (object) {
  const body = Buffer.from(JSON.stringify(object))
  const head = Buffer.alloc(4)
  head.writeUInt32BE(body.length)
  return Buffer.concat([head, body])
}

/** A fake sidecar: records every connection's frames; `next()` waits for the next connection. */
class FakeSidecar {
  constructor () {
    this.connections = []
    this.waiters = []
    this.server = net.createServer((socket) => {
      const connection = { socket, frames: [], waiters: [], closed: false }
      const reader = new FrameReader(1 << 24)
      socket.on('data', (chunk) => {
        for (const body of reader.push(chunk)) {
          connection.frames.push(JSON.parse(body.toString()))
        }
        this._wake(connection)
      })
      socket.on('close', () => { connection.closed = true; this._wake(connection) })
      socket.on('error', () => {})
      this.connections.push(connection)
      for (const waiter of this.waiters.splice(0)) waiter()
    })
  }

  _wake (connection) {
    for (const waiter of connection.waiters.splice(0)) waiter()
  }

  async listen (port = 0) {
    await new Promise((resolve) => this.server.listen(port, '127.0.0.1', resolve))
    this.port = this.server.address().port
    return `127.0.0.1:${this.port}`
  }

  async next (count) {
    while (this.connections.length < count) {
      await new Promise((resolve) => this.waiters.push(resolve))
    }
    return this.connections[count - 1]
  }

  /** Waits until `connection` has received frames satisfying `predicate(frames)`. */
  async until (connection, predicate) {
    while (!predicate(connection.frames)) {
      if (connection.closed) throw new Error(`connection closed; frames: ${JSON.stringify(connection.frames)}`)
      await new Promise((resolve) => connection.waiters.push(resolve))
    }
  }

  async close () {
    for (const connection of this.connections) connection.socket.destroy()
    await new Promise((resolve) => this.server.close(resolve))
  }
}

function makeLogger () {
  const lines = []
  const log = (level) => (event, text) => lines.push({ level, event, text })
  return { lines, logger: { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error'), fatal: log('fatal') } }
}

function plugin (bridge, extra = {}, serverName = 'server-a') {
  const { lines, logger } = makeLogger()
  const node = new SwarmClusterNode({ bridge, reconnectInterval: 20, maxReconnectInterval: 100, ...extra },
    { logger }, { serverName })
  return { node, lines }
}

const tick = (ms = 20) => new Promise((resolve) => setTimeout(resolve, ms))

async function eventually (predicate, what) {
  const deadline = Date.now() + CASE_TIMEOUT / 2
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await tick(10)
  }
}

const cases = {
  async 'parses bridge addresses' () {
    assert.deepStrictEqual(parseBridgeAddress('127.0.0.1:7101'), { host: '127.0.0.1', port: 7101 })
    assert.deepStrictEqual(parseBridgeAddress('[::1]:7101'), { host: '::1', port: 7101 })
    assert.deepStrictEqual(parseBridgeAddress('/run/swarm/bridge.sock'), { path: '/run/swarm/bridge.sock' })
    assert.deepStrictEqual(parseBridgeAddress('bridge.sock'), { path: 'bridge.sock' })
    assert.deepStrictEqual(parseBridgeAddress(7101), { host: '127.0.0.1', port: 7101 })
    assert.throws(() => parseBridgeAddress(undefined), /bridge/)
    assert.throws(() => parseBridgeAddress('127.0.0.1:99999'), /port/)
    assert.throws(() => new SwarmClusterNode({ bridge: '127.0.0.1:1', maxQueuedMessages: -1 }, {}, {}), /maxQueuedMessages/)
  },

  async 'whenReady waits for ready; subscriptions and queued sends follow the welcome in order' () {
    const sidecar = new FakeSidecar()
    const { node } = plugin(await sidecar.listen())
    node.subscribe(9, () => {}) // deepstream's cluster registry subscribes before anything is connected
    node.send({ topic: 9, action: 1, n: 1 })
    node.init()
    let ready = false
    node.whenReady().then(() => { ready = true })
    const connection = await sidecar.next(1)
    await sidecar.until(connection, (f) => f.length >= 1)
    assert.deepStrictEqual(connection.frames[0].op, 'hello')
    assert.strictEqual(connection.frames[0].version, 1)
    connection.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: false }))
    await sidecar.until(connection, (f) => f.length >= 2)
    assert.deepStrictEqual(connection.frames[1], { op: 'subscribe', topic: 9 })
    node.subscribe(11, () => {})
    node.sendDirect('server-b', { topic: 11, n: 2 })
    await sidecar.until(connection, (f) => f.length >= 3)
    assert.deepStrictEqual(connection.frames[2], { op: 'subscribe', topic: 11 })
    await tick(50)
    assert.strictEqual(ready, false, 'ready before the sidecar said so')
    assert.strictEqual(connection.frames.length, 3, 'sent before the sidecar was ready')
    connection.socket.write(frame({ op: 'ready' }))
    await sidecar.until(connection, (f) => f.length >= 5)
    assert.deepStrictEqual(connection.frames.slice(3), [
      { op: 'send', message: { topic: 9, action: 1, n: 1 } },
      { op: 'send_direct', server: 'server-b', message: { topic: 11, n: 2 } }
    ])
    await eventually(() => ready, 'whenReady')
    assert.strictEqual(node.isReady, true)
    await node.close()
    await sidecar.close()
  },

  async 'delivers with the origin, copies per callback, drops echoes, survives a throwing callback' () {
    const sidecar = new FakeSidecar()
    const { node, lines } = plugin(await sidecar.listen())
    const got = []
    node.subscribe(4, () => { throw new Error('subscriber bug') })
    node.subscribe(4, (message, origin) => { message.mutated = true; got.push(['first', message, origin]) })
    node.subscribe(4, (message, origin) => got.push(['second', message, origin]))
    node.init()
    const connection = await sidecar.next(1)
    connection.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    await node.whenReady()
    connection.socket.write(Buffer.concat([
      frame({ op: 'message', origin: 'server-a', message: { topic: 4, n: 0 } }), // an echo: dropped
      frame({ op: 'message', origin: 'server-b', message: { topic: 4, n: 1 } }),
      frame({ op: 'message', origin: 'server-c', message: { topic: 5, n: 2 } }) // nobody subscribed
    ]))
    await eventually(() => got.length === 2, 'two deliveries')
    assert.deepStrictEqual(got[0], ['first', { topic: 4, n: 1, mutated: true }, 'server-b'])
    assert.deepStrictEqual(got[1], ['second', { topic: 4, n: 1 }, 'server-b'])
    assert.ok(lines.some((l) => l.level === 'error' && /threw/.test(l.text)), 'the throwing callback is logged')
    assert.ok(lines.some((l) => l.level === 'warn' && /echoed/.test(l.text)), 'the echo is logged')
    connection.socket.write(frame({ op: 'error', code: 'unknown-node', text: 'no node server-x' }))
    await eventually(() => lines.some((l) => /unknown-node: no node server-x/.test(l.text)), 'the error op logged')
    await node.close()
    await sidecar.close()
  },

  async 'logs the sidecar\'s drop reports with their exact counts, and peers that leave or are lost' () {
    const sidecar = new FakeSidecar()
    const { node, lines } = plugin(await sidecar.listen())
    node.init()
    const connection = await sidecar.next(1)
    connection.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    await node.whenReady()
    connection.socket.write(Buffer.concat([
      frame({ op: 'dropped', total: 5, origins: { 'server-b': 3, 'server-c': 2 }, text: 'queue full' }),
      frame({ op: 'dropped', total: 1, origins: { 'server-b': 1 }, text: 'queue full' }),
      frame({ op: 'peer', server: 'server-b', event: 'lost', text: 'peer server-b is lost: its link failed' }),
      frame({ op: 'peer', server: 'server-c', event: 'left', text: 'peer server-c left the cluster' })
    ]))
    await eventually(() => lines.some((l) => /server-c left/.test(l.text)), 'the peer ops logged')
    const drops = lines.filter((l) => /^lost \d+ messages from the cluster/.test(l.text))
    assert.deepStrictEqual(drops.map((l) => [l.level, l.text.slice(0, l.text.indexOf(')') + 1)]), [
      ['warn', 'lost 5 messages from the cluster (3 from server-b, 2 from server-c; 5 since start)'],
      ['warn', 'lost 1 messages from the cluster (1 from server-b; 6 since start)']])
    assert.ok(lines.some((l) => l.level === 'warn' && /server-b is lost/.test(l.text)), 'a lost peer is a warning')
    assert.ok(lines.some((l) => l.level === 'info' && /server-c left the cluster/.test(l.text)), 'a leave is info')
    assert.strictEqual(connection.closed, false, 'the connection stays up')
    await node.close()
    await sidecar.close()
  },

  async 'readyTimeout: whenReady gives up waiting, messages wait for the sidecar, then go in order' () {
    const probe = net.createServer()
    await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve))
    const port = probe.address().port
    await new Promise((resolve) => probe.close(resolve)) // nothing listens there yet
    const { node, lines } = plugin(`127.0.0.1:${port}`, { readyTimeout: 100 })
    const started = Date.now()
    await node.whenReady()
    assert.ok(Date.now() - started < 2000, 'whenReady resolved by its timeout')
    assert.ok(lines.some((l) => l.level === 'warn' && /not ready after 100 ms \(readyTimeout\)/.test(l.text)), 'the start without the cluster is logged')
    node.send({ topic: 4, n: 1 })
    node.send({ topic: 4, n: 2 })
    const sidecar = new FakeSidecar()
    await sidecar.listen(port)
    const connection = await sidecar.next(1)
    await sidecar.until(connection, (frames) => frames.length >= 1)
    connection.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    await sidecar.until(connection, (frames) => frames.length >= 3)
    assert.deepStrictEqual(connection.frames.slice(1).map((f) => f.message.n), [1, 2])
    assert.ok(lines.some((l) => /is ready: this server joins its cluster now, and the 2 messages that waited are sent/.test(l.text)), 'the late join is logged')
    await node.close()
    await sidecar.close()
  },

  async 'readyTimeout defaults to 3/4 of deepstream\'s dependencyInitializationTimeout' () {
    assert.strictEqual(new SwarmClusterNode({ bridge: '127.0.0.1:1' }, {}, { serverName: 'x', dependencyInitializationTimeout: 10000 }).options.readyTimeout, 7500)
    assert.strictEqual(new SwarmClusterNode({ bridge: '127.0.0.1:1' }, {}, { serverName: 'x' }).options.readyTimeout, 1500)
    assert.strictEqual(new SwarmClusterNode({ bridge: '127.0.0.1:1', readyTimeout: 60000 }, {}, { serverName: 'x' }).options.readyTimeout, 60000)
  },

  async 'Buffer data travels as its text' () {
    const sidecar = new FakeSidecar()
    const { node } = plugin(await sidecar.listen())
    node.init()
    const connection = await sidecar.next(1)
    connection.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    await node.whenReady()
    const message = { topic: 4, action: 2, name: 'e', data: Buffer.from('{"x":1}') }
    node.send(message)
    await sidecar.until(connection, (f) => f.length >= 2)
    assert.deepStrictEqual(connection.frames[1], { op: 'send', message: { topic: 4, action: 2, name: 'e', data: '{"x":1}' } })
    assert.ok(Buffer.isBuffer(message.data), 'the caller\'s message is not changed')
    await node.close()
    await sidecar.close()
  },

  async 'does not send what the sidecar would drop it for: too large, not JSON, no topic, no server' () {
    const sidecar = new FakeSidecar()
    const { node, lines } = plugin(await sidecar.listen(), { maxFrameSize: 1000 })
    node.init()
    const connection = await sidecar.next(1)
    connection.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    await node.whenReady()
    node.send({ topic: 5, data: 'x'.repeat(2000) })
    const cyclic = { topic: 5 }
    cyclic.self = cyclic
    node.send(cyclic)
    node.send({ action: 1 }) // no topic
    node.sendDirect(undefined, { topic: 5 })
    node.send({ topic: 5, n: 'small' })
    await sidecar.until(connection, (f) => f.length >= 2)
    assert.deepStrictEqual(connection.frames[1], { op: 'send', message: { topic: 5, n: 'small' } })
    assert.ok(lines.some((l) => l.level === 'error' && /over maxFrameSize 1000: not sent/.test(l.text)))
    assert.ok(lines.some((l) => l.level === 'error' && /cannot be written as JSON/.test(l.text)))
    assert.ok(lines.some((l) => l.level === 'error' && /without an integer or string topic/.test(l.text)))
    assert.ok(lines.some((l) => l.level === 'error' && /sendDirect needs a serverName/.test(l.text)))
    assert.strictEqual(connection.frames.length, 2)
    await node.close()
    await sidecar.close()
  },

  async 'reconnects, re-subscribes, and delivers what was queued (the oldest dropped past the bound)' () {
    const sidecar = new FakeSidecar()
    const bridge = await sidecar.listen()
    const { node, lines } = plugin(bridge, { maxQueuedMessages: 3 })
    node.subscribe(6, () => {})
    node.init()
    const first = await sidecar.next(1)
    first.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    await node.whenReady()
    // the sidecar goes away altogether
    const port = sidecar.port
    await sidecar.close()
    await eventually(() => lines.some((l) => l.level === 'warn' && /lost swarm sidecar/.test(l.text)), 'the loss logged')
    for (let n = 1; n <= 5; n++) node.send({ topic: 6, n })
    assert.ok(lines.some((l) => l.level === 'warn' && /dropping the oldest/.test(l.text)), 'the overflow logged')
    await tick(150) // failed attempts
    const again = new FakeSidecar()
    await again.listen(port)
    const second = await again.next(1)
    await again.until(second, (f) => f.length >= 1)
    assert.strictEqual(second.frames[0].op, 'hello')
    second.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    await again.until(second, (f) => f.length >= 5)
    assert.deepStrictEqual(second.frames.slice(1), [
      { op: 'subscribe', topic: 6 },
      { op: 'send', message: { topic: 6, n: 3 } },
      { op: 'send', message: { topic: 6, n: 4 } },
      { op: 'send', message: { topic: 6, n: 5 } }
    ])
    assert.ok(lines.some((l) => /reconnected/.test(l.text)), 'the reconnection logged')
    assert.ok(lines.some((l) => /dropped 2 messages/.test(l.text)), 'the drop count logged')
    assert.ok(!lines.some((l) => l.level === 'fatal'), 'nothing fatal')
    await node.close()
    await again.close()
  },

  async 'refuses a sidecar of another serverName, and keeps trying' () {
    const sidecar = new FakeSidecar()
    const { node, lines } = plugin(await sidecar.listen())
    let ready = false
    node.whenReady().then(() => { ready = true })
    const first = await sidecar.next(1)
    first.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-z', ready: true }))
    const second = await sidecar.next(2)
    assert.ok(lines.some((l) => l.level === 'error' && /serverName/.test(l.text)), 'the mismatch logged as an error')
    assert.strictEqual(ready, false)
    second.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    await eventually(() => ready, 'ready with the right sidecar')
    await node.close()
    await sidecar.close()
  },

  async 'drops a connection that sends garbage or no welcome, and reconnects' () {
    const sidecar = new FakeSidecar()
    const { node, lines } = plugin(await sidecar.listen(), { handshakeTimeout: 200, maxFrameSize: 1000 })
    node.init()
    const first = await sidecar.next(1)
    first.socket.write(Buffer.from([0xff, 0xff, 0xff, 0xff])) // a 4 GiB frame
    const second = await sidecar.next(2)
    second.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    second.socket.write(Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')]))
    await sidecar.next(3) // and this one never says welcome
    await sidecar.next(4)
    assert.ok(lines.some((l) => /exceeds maxFrameSize/.test(l.text)))
    assert.ok(lines.some((l) => /undecodable frame/.test(l.text)))
    assert.ok(lines.some((l) => /no welcome within 200 ms/.test(l.text)))
    await node.close()
    await sidecar.close()
  },

  async 'close writes what was sent in the same tick, then stops for good' () {
    const sidecar = new FakeSidecar()
    const { node } = plugin(await sidecar.listen())
    node.init()
    const connection = await sidecar.next(1)
    connection.socket.write(frame({ op: 'welcome', version: 1, serverName: 'server-a', ready: true }))
    await node.whenReady()
    const closed = node.close()
    node.send({ topic: 9, action: 'leave' }) // deepstream's cluster registry, closed right after the node
    await closed
    await sidecar.until(connection, () => connection.closed)
    assert.deepStrictEqual(connection.frames.slice(1), [{ op: 'send', message: { topic: 9, action: 'leave' } }])
    node.send({ topic: 9, n: 'after close' })
    await tick(150)
    assert.strictEqual(sidecar.connections.length, 1, 'no reconnection after close')
    await sidecar.close()
  }
}

const FAKE_NODE = [process.execPath, path.join(__dirname, 'fake_node.js')]

function pidGone (pid) {
  try {
    process.kill(pid, 0)
    return false
  } catch (error) {
    return error.code === 'ESRCH'
  }
}

Object.assign(cases, {
  async 'supervised mode: every bad option is refused, naming its key' () {
    const make = (options, serverName = 'server-a') => new SwarmClusterNode(options, {}, { serverName })
    const refused = [
      [{ python: '' }, /"python"/],
      [{ python: ['python3', 3] }, /"python"/],
      [{ port: 70000 }, /"port"/],
      [{ port: '6021' }, /"port"/],
      [{ seeds: '10.0.0.1:6021' }, /"seeds".*list/],
      [{ seeds: ['10.0.0.1'] }, /"seeds"/],
      [{ seeds: ['10.0.0.1:0'] }, /"seeds"/],
      [{ swarm: [] }, /"swarm"/],
      [{ swarm: { serverName: 'x' } }, /"swarm.serverName"/],
      [{ swarm: { bridge: '/tmp/x' } }, /"swarm.bridge"/],
      [{ swarm: { seedNodes: [] } }, /"swarm.seedNodes".*"seeds"/],
      [{ env: { A: 1 } }, /"env"/],
      [{ logLevel: 'LOUD' }, /"logLevel"/],
      [{ restartDelay: 0 }, /"restartDelay"/],
      [{ restartDelay: 1000, maxRestartDelay: 10 }, /"maxRestartDelay"/],
      [{ runtimeDirectory: '/' + 'x'.repeat(100) }, /"runtimeDirectory"/],
      [{ sedes: [] }, /unknown option "sedes"/],
      [{ bridge: '127.0.0.1:7101', seeds: [] }, /"seeds".*"bridge"/]
    ]
    for (const [options, pattern] of refused) {
      assert.throws(() => make(options), pattern, JSON.stringify(options))
    }
    assert.throws(() => make({}, null), /serverName/)
    const node = make({ python: ['/opt/venv/bin/python', '-X', 'dev'], seeds: ['[::1]:6021', 'swarm.example:6021'], port: 0 })
    assert.deepStrictEqual(node.supervised.python, ['/opt/venv/bin/python', '-X', 'dev'])
    assert.strictEqual(node.supervised.restartDelay, 100)
    assert.strictEqual(node.supervised.maxRestartDelay, 5000)
    assert.strictEqual(node.supervisor, null, 'nothing is started before init()')
  },

  async 'supervised mode: the node is started, restarted after SIGKILL, and stopped with the plugin' () {
    const { lines, logger } = makeLogger()
    const node = new SwarmClusterNode({ python: FAKE_NODE, port: 1234, seeds: ['127.0.0.1:1'], swarm: { localLinks: 3 } },
      { logger }, { serverName: 'server-a' })
    node.init()
    await node.whenReady()
    const supervisor = node.supervisor
    const directory = supervisor.directory
    assert.strictEqual(fs.statSync(directory).mode & 0o777, 0o700)
    const written = JSON.parse(fs.readFileSync(path.join(directory, 'swarm.json'), 'utf8'))
    assert.deepStrictEqual(written, {
      serverName: 'server-a',
      plugins: { message: { type: 'direct', options: {
        logFormat: 'json', localLinks: 3, host: '127.0.0.1', port: 1234, seedNodes: ['127.0.0.1:1'],
        bridge: path.join(directory, 'bridge.sock'), exitOnStdinClose: true } } }
    })
    assert.ok(lines.some((l) => l.level === 'warn' && /fake node server-a up/.test(l.text)), 'stderr JSON keeps its level')
    const first = supervisor.pid
    process.kill(first, 'SIGKILL')
    await eventually(() => supervisor.pid !== first && lines.some((l) => /reconnected/.test(l.text)), 'a new node, reconnected')
    assert.ok(lines.some((l) => /was killed by SIGKILL .*starting it again in 100 ms/.test(l.text)))
    const second = supervisor.pid
    await node.close()
    assert.ok(pidGone(second), 'the node outlived close()')
    assert.ok(!fs.existsSync(directory), 'the private directory is left behind')
  },

  async 'supervised mode: the directories of dead deepstream processes are removed at start' () {
    const root = fs.mkdtempSync(path.join(require('os').tmpdir(), 'plugin-unit-'))
    const dead = require('child_process').spawnSync(process.execPath, ['-e', '']).pid
    const make = (name, owner, socket) => {
      const directory = path.join(root, name)
      fs.mkdirSync(directory)
      if (owner !== undefined) fs.writeFileSync(path.join(directory, 'deepstream.pid'), `${owner}\n`)
      if (socket) fs.writeFileSync(path.join(directory, 'bridge.sock'), '')
      return directory
    }
    const orphan = make('swarm-clusternode-orphan', dead)
    const live = make('swarm-clusternode-live', process.pid)
    const unowned = make('swarm-clusternode-new') // being made by another plugin: no owner file yet
    const socketed = make('swarm-clusternode-elsewhere', dead, true) // maybe another pid namespace's
    const other = make('not-ours', dead)
    const { lines, logger } = makeLogger()
    const node = new SwarmClusterNode({ python: FAKE_NODE, runtimeDirectory: root }, { logger }, { serverName: 'server-a' })
    node.init()
    await node.whenReady()
    assert.ok(!fs.existsSync(orphan), 'the orphan is left')
    for (const kept of [live, unowned, socketed, other]) assert.ok(fs.existsSync(kept), `${kept} removed`)
    assert.ok(lines.some((l) => /removed .*orphan, left by deepstream process/.test(l.text)))
    assert.strictEqual(fs.readFileSync(path.join(node.supervisor.directory, 'deepstream.pid'), 'utf8'), `${process.pid}\n`)
    await node.close()
    fs.rmSync(root, { recursive: true, force: true })
  },

  async 'supervised mode: a node that keeps dying is restarted ever later, up to the bound' () {
    const { lines, logger } = makeLogger()
    const node = new SwarmClusterNode({ python: FAKE_NODE, env: { FAKE_NODE_MODE: 'crash' }, restartDelay: 10, maxRestartDelay: 40, stableAfter: 600000 },
      { logger }, { serverName: 'server-a' })
    node.init()
    const exits = () => lines.filter((l) => /exited with status 1/.test(l.text))
    await eventually(() => exits().length >= 4, 'four exits')
    const delays = exits().slice(0, 4).map((l) => Number(/starting it again in (\d+) ms/.exec(l.text)[1]))
    assert.deepStrictEqual(delays, [10, 20, 40, 40])
    assert.ok(/a scripted crash/.test(exits()[0].text), 'the exit is logged with the node\'s last lines')
    await node.close()
    assert.strictEqual(node.isReady, false)
  },

  async 'supervised mode: a python that cannot be run is an error in the log, retried' () {
    const { lines, logger } = makeLogger()
    const node = new SwarmClusterNode({ python: '/nonexistent/python3', restartDelay: 10 }, { logger }, { serverName: 'server-a' })
    node.init()
    await eventually(() => lines.filter((l) => l.level === 'error' && /could not be started \(option "python"/.test(l.text)).length >= 2, 'two failed starts')
    await node.close()
  }
})

async function main () {
  let failed = 0
  for (const [name, run] of Object.entries(cases)) {
    let timer
    try {
      await Promise.race([run(), new Promise((resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${CASE_TIMEOUT} ms`)), CASE_TIMEOUT)
      })])
      console.log(`ok ${name}`)
    } catch (error) {
      failed += 1
      console.log(`FAILED ${name}: ${error && error.stack}`)
    } finally {
      clearTimeout(timer)
    }
  }
  process.exit(failed ? 1 : 0)
}

main()

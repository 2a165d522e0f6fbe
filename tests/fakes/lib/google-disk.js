'use strict';
/*
 * --data-dir DIR: a local folder behind the fake Drive.
 *   DIR/<email>/...        that user's My Drive (folders and files)
 *   DIR/.fake-drive-ids.json   { paths: { "<email>/Inbox/a.jpg": "<fileId>" } } so ids
 *                              survive rescans and restarts
 * The tree is scanned every second and before each Drive request: new files become
 * 'created' changes, changed size/mtime a content change (modifiedTime = the file's
 * mtime), vanished paths permanent removals. A rename on disk is a removal plus a new
 * file (new id). What the API creates, renames, moves, rewrites or deletes is mirrored
 * on disk; trashed files stay where they are (trash is only a flag, not persisted).
 * Entries whose name starts with '.' are ignored. Names that clash on disk get " (n)".
 */
const fs = require('node:fs');
const path = require('node:path');
const { FOLDER, guessMime, md5, newId } = require('./google-drive');

class DiskBacking {
  constructor(dir, store, hooks) {
    this.dir = path.resolve(dir);
    this.store = store;
    this.hooks = hooks; // { ensureUser(email) }
    fs.mkdirSync(this.dir, { recursive: true });
    this.mapFile = path.join(this.dir, '.fake-drive-ids.json');
    this.paths = {};
    try { this.paths = JSON.parse(fs.readFileSync(this.mapFile, 'utf8')).paths || {}; } catch (e) { /* first run */ }
    this.timer = setInterval(() => { try { this.scan(); } catch (e) { /* next tick */ } }, 1000);
    this.timer.unref();
    this.scanning = false;
  }

  stop() { clearInterval(this.timer); }

  save() { fs.writeFileSync(this.mapFile, JSON.stringify({ paths: this.paths }, null, 1)); }

  rel(abs) { return path.relative(this.dir, abs).split(path.sep).join('/'); }

  idFor(rel) { return this.paths[rel]; }

  ensureUserDir(user) {
    const abs = path.join(this.dir, user.email);
    fs.mkdirSync(abs, { recursive: true });
    const root = this.store.files.get(user.rootId);
    root.diskPath = abs;
    if (this.paths[user.email] !== user.rootId) { this.paths[user.email] = user.rootId; this.save(); }
  }

  scan() {
    if (this.scanning) return;
    this.scanning = true;
    try {
      for (const ent of fs.readdirSync(this.dir, { withFileTypes: true })) {
        if (!ent.isDirectory() || ent.name.startsWith('.') || !ent.name.includes('@')) continue;
        const user = this.hooks.ensureUser(ent.name);
        const seen = new Set([user.rootId]);
        this.walk(user, path.join(this.dir, ent.name), user.rootId, seen);
        for (const f of [...this.store.files.values()]) {
          if (f.ownerSub === user.sub && f.diskPath && !seen.has(f.id) && this.store.files.has(f.id)) {
            this.forget(f.diskPath);
            this.store.deleteFile(f, { fromDisk: true });
          }
        }
      }
    } finally { this.scanning = false; }
  }

  walk(user, absDir, parentId, seen) {
    let ents;
    try { ents = fs.readdirSync(absDir, { withFileTypes: true }); } catch (e) { return; }
    for (const ent of ents) {
      if (ent.name.startsWith('.') || !(ent.isFile() || ent.isDirectory())) continue;
      const abs = path.join(absDir, ent.name);
      const rel = this.rel(abs);
      let st;
      try { st = fs.statSync(abs); } catch (e) { continue; }
      let id = this.paths[rel];
      let f = id && this.store.files.get(id);
      if (f && f.ownerSub !== user.sub) f = null;
      if (!f) {
        id = id || newId();
        this.paths[rel] = id; this.save();
        const isDir = ent.isDirectory();
        const content = isDir ? null : fs.readFileSync(abs);
        const meta = {
          name: ent.name, parents: [parentId], mimeType: isDir ? FOLDER : guessMime(ent.name),
          modifiedTime: st.mtime.toISOString(), createdTime: (st.birthtimeMs ? st.birthtime : st.mtime).toISOString(),
        };
        f = this.store.createFile(user, meta, content, { id, fromDisk: true });
        f.diskPath = abs;
        f.diskSig = `${st.size}:${st.mtimeMs}`;
      } else if (f.mimeType !== FOLDER && f.diskSig !== `${st.size}:${st.mtimeMs}`) {
        // changed behind our back: new content, modifiedTime from the file
        this.store.setContent(f, fs.readFileSync(abs), st.mtime.toISOString());
        f.diskSig = `${st.size}:${st.mtimeMs}`;
        this.store.recordChange(f);
      }
      f.diskPath = abs;
      seen.add(f.id);
      if (ent.isDirectory()) this.walk(user, abs, f.id, seen);
    }
  }

  forget(abs) {
    const rel = this.rel(abs);
    for (const k of Object.keys(this.paths)) if (k === rel || k.startsWith(`${rel}/`)) delete this.paths[k];
    this.save();
  }

  // Mirror an API create/update on disk.
  onWrite(f) {
    const parent = f.parents.length ? this.store.files.get(f.parents[0]) : null;
    if (!parent || !parent.diskPath) return;
    const safe = f.name.replace(/[/\\\0]/g, '_').replace(/^\.+/, '_') || '_';
    let want = path.join(parent.diskPath, safe);
    if (want !== f.diskPath) {
      const ext = path.extname(safe); const base = safe.slice(0, safe.length - ext.length);
      for (let n = 1; fs.existsSync(want) && this.paths[this.rel(want)] !== f.id; n++) {
        want = path.join(parent.diskPath, `${base} (${n})${ext}`);
      }
      if (f.diskPath && fs.existsSync(f.diskPath)) {
        fs.renameSync(f.diskPath, want);
        const oldRel = this.rel(f.diskPath); const newRel = this.rel(want);
        for (const k of Object.keys(this.paths)) {
          if (k === oldRel || k.startsWith(`${oldRel}/`)) {
            this.paths[newRel + k.slice(oldRel.length)] = this.paths[k]; delete this.paths[k];
          }
        }
        for (const g of this.store.files.values()) {
          if (g.diskPath && (g.diskPath === f.diskPath || g.diskPath.startsWith(f.diskPath + path.sep))) {
            g.diskPath = want + g.diskPath.slice(f.diskPath.length);
          }
        }
      }
      f.diskPath = want;
      this.paths[this.rel(want)] = f.id;
      this.save();
    }
    if (f.mimeType === FOLDER) { fs.mkdirSync(want, { recursive: true }); return; }
    if (!fs.existsSync(want) || md5(fs.readFileSync(want)) !== f.md5) fs.writeFileSync(want, f.content);
    const t = new Date(f.modifiedTime);
    fs.utimesSync(want, t, t);
    const st = fs.statSync(want);
    f.diskSig = `${st.size}:${st.mtimeMs}`;
  }

  onDelete(f) {
    if (!f.diskPath) return;
    fs.rmSync(f.diskPath, { recursive: true, force: true });
    this.forget(f.diskPath);
  }

  content(f) { return f.content; }
}

module.exports = { DiskBacking };

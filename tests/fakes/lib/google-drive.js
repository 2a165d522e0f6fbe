'use strict';
/*
 * Drive v3 state and its HTTP routes for the Google fake (google.js).
 *
 * State: one global file table (ids are unique across users, as in Drive); each
 * file has one owner. Each user has a root folder ("My Drive", alias 'root').
 * A change log records (changeId, ownerSub, fileId, time, removed); changes.list
 * shows each file at most once, at its LATEST change after the page token, with
 * the file's CURRENT state -- that is how Drive collapses changes.
 *
 * Subtle Drive semantics kept here:
 *  - Another user's file that is not shared with you is 404 notFound (not 403);
 *    a file shared with you as reader is readable but writes are 403
 *    insufficientFilePermissions.
 *  - Trashing a folder implicitly trashes its descendants (trashed:true,
 *    explicitlyTrashed:false); a trashed file stays listed unless q says
 *    trashed = false. Trash is a change with removed:false and file.trashed:true.
 *  - Permanent delete (and delete of a folder's descendants) is removed:true, no file.
 *  - A file has exactly one parent: `parents` is not writable in files.update
 *    (403 fieldNotWritable); use addParents/removeParents; two parents is 403.
 *  - modifiedTime changes on content changes, not on rename/move/trash; a client
 *    may set it (and createdTime on create) explicitly.
 *  - webViewLink is always present (also before sharing); sharing with
 *    anyone sets shared:true and lets any signed-in user read the file by id.
 *
 * Scopes (the caller from a Drive request carries `grant`, see google.js; the
 * admin API's callers have none and see everything their user sees):
 *  - No Drive scope, or only read-only ones for a write: 403
 *    insufficientPermissions "Request had insufficient authentication scopes."
 *    (checked in google.js before any file is looked at).
 *  - `drive`: every file the user can reach.
 *  - `drive.readonly` / `drive.metadata*`: every file is visible (list, get,
 *    download, changes) but none can be changed through that scope.
 *  - `drive.file`: only files this OAuth client created are visible and
 *    changeable (isAppAuthorized). Other files are 404 notFound, missing from
 *    lists and from changes.list, exactly as if they did not exist.
 *  - Visible but not created by this client (drive.readonly + drive.file):
 *    files.update, delete and permissions.create are 403 appNotAuthorizedToFile
 *    "The user has not granted the app <client> write access to the file <id>."
 *  - A new file may go into any folder the app can see and the user can write
 *    (files.create with parents): creating a child writes the new file, not the
 *    folder. Google's documents do not spell this case out; see
 *    docs/api-gateway.md "Google scopes".
 */
const crypto = require('node:crypto');
const path = require('node:path');
const { HttpError, readBody, readJson, sendJson } = require('./common');
const { compileQuery, QueryError } = require('./google-query');
const { parseFields, applyFields, FieldsError } = require('./google-fields');

const FOLDER = 'application/vnd.google-apps.folder';
const STATUS_NAMES = {
  400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED', 403: 'PERMISSION_DENIED', 404: 'NOT_FOUND',
  409: 'ABORTED', 410: 'ABORTED', 429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL', 502: 'UNAVAILABLE',
  503: 'UNAVAILABLE', 504: 'DEADLINE_EXCEEDED',
};
const MIME_BY_EXT = {
  '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif',
  '.webp': 'image/webp', '.tif': 'image/tiff', '.tiff': 'image/tiff', '.bmp': 'image/bmp',
  '.heic': 'image/heic', '.svg': 'image/svg+xml', '.txt': 'text/plain', '.json': 'application/json',
  '.pdf': 'application/pdf', '.zip': 'application/zip', '.mp4': 'video/mp4', '.mov': 'video/quicktime',
  '.csv': 'text/csv', '.html': 'text/html',
};
const KNOWN_FILE_FIELDS = new Set(('kind,id,name,mimeType,description,starred,trashed,explicitlyTrashed,' +
  'parents,properties,appProperties,spaces,version,webContentLink,webViewLink,iconLink,hasThumbnail,' +
  'thumbnailLink,thumbnailVersion,viewedByMe,viewedByMeTime,createdTime,modifiedTime,modifiedByMeTime,' +
  'modifiedByMe,sharedWithMeTime,sharingUser,owners,lastModifyingUser,shared,ownedByMe,capabilities,' +
  'viewersCanCopyContent,copyRequiresWriterPermission,writersCanShare,permissions,permissionIds,' +
  'hasAugmentedPermissions,folderColorRgb,originalFilename,fullFileExtension,fileExtension,md5Checksum,' +
  'sha1Checksum,sha256Checksum,size,quotaBytesUsed,headRevisionId,isAppAuthorized,resourceKey,driveId,' +
  'teamDriveId,trashedTime,trashingUser,imageMediaMetadata,videoMediaMetadata,exportLinks,' +
  'shortcutDetails,contentRestrictions,labelInfo,linkShareMetadata,contentHints').split(','));
const ORDER_KEYS = new Set(['createdTime', 'folder', 'modifiedByMeTime', 'modifiedTime', 'name',
  'name_natural', 'quotaBytesUsed', 'recency', 'sharedWithMeTime', 'starred', 'viewedByMeTime']);
const RESUMABLE_CHUNK = 256 * 1024;

function driveError(status, reason, message, extra) {
  const domain = /RateLimit|dailyLimit/.test(reason) ? 'usageLimits' : 'global';
  return new HttpError(status, {
    error: {
      code: status, message,
      errors: [{ message, domain, reason, ...(extra || {}) }],
      status: STATUS_NAMES[status] || 'UNKNOWN',
    },
  });
}
const invalidParam = (location, message) => driveError(400, 'invalid', message || 'Invalid Value',
  { location, locationType: 'parameter' });
const notFound = (id) => driveError(404, 'notFound', `File not found: ${id}.`, { location: 'fileId', locationType: 'parameter' });
const noPermission = () => driveError(403, 'insufficientFilePermissions',
  'The user does not have sufficient permissions for this file.');

const nowIso = () => new Date().toISOString(); // RFC 3339 with milliseconds
const newId = () => `1${crypto.randomBytes(24).toString('base64url').slice(0, 32)}`;
const md5 = (buf) => crypto.createHash('md5').update(buf).digest('hex');
const guessMime = (name) => MIME_BY_EXT[path.extname(name || '').toLowerCase()] || 'application/octet-stream';

function normTime(v, field) {
  if (typeof v !== 'string' || Number.isNaN(Date.parse(v))) throw driveError(400, 'invalid', `Invalid value for ${field}: ${v}`);
  return new Date(Date.parse(v)).toISOString();
}

class DriveStore {
  constructor(users) {
    this.users = users; // { bySub(sub), byEmail(email) }
    this.files = new Map();
    this.changes = []; // {id, sub, fileId, time, removed}
    this.changeSeq = 0;
    this.sessions = new Map(); // resumable upload sessions
    this.uploadDrops = []; // test hooks: cut the next chunk PUTs mid-body (POST /__admin/uploads/drop)
    this.disk = null; // set by google-disk.js when --data-dir is given
  }

  ensureRoot(user, id) {
    if (user.rootId && this.files.has(user.rootId)) return this.files.get(user.rootId);
    const t = nowIso();
    const root = {
      id: id || `0A${crypto.randomBytes(12).toString('base64url')}Uk9PVA`, ownerSub: user.sub, name: 'My Drive',
      mimeType: FOLDER, parents: [], isRoot: true, trashed: false, explicitlyTrashed: false, starred: false,
      createdTime: t, modifiedTime: t, appProperties: {}, properties: {}, permissions: [], version: 1,
    };
    this.files.set(root.id, root);
    user.rootId = root.id;
    return root;
  }

  recordChange(file, removed) {
    this.changes.push({ id: ++this.changeSeq, sub: file.ownerSub, fileId: file.id, time: nowIso(), removed: !!removed });
    if (this.onChange) this.onChange(file.ownerSub); // push notifications (google-push.js)
  }

  startPageToken() { return String(this.changeSeq + 1); }

  resolveId(user, id) { return id === 'root' ? user.rootId : id; }

  // Whether the caller's app grant lets it see / change file f (no grant: yes).
  appSees(f, user) {
    const g = user.grant;
    return !g || g.readAll || f.isRoot || (g.perFile && !!f.apps && f.apps.has(g.clientId));
  }

  appWrites(f, user) {
    const g = user.grant;
    return !g || g.full || (g.perFile && !!f.apps && f.apps.has(g.clientId));
  }

  // 'owner' | 'writer' | 'reader' | null (null also when the app may not see it)
  access(file, user) {
    if (!this.appSees(file, user)) return null;
    if (file.ownerSub === user.sub) return 'owner';
    let best = null;
    for (const p of file.permissions) {
      if (p.type === 'anyone' || (p.type === 'user' && p.emailAddress === user.email)) {
        if (p.role === 'writer' || p.role === 'organizer' || p.role === 'fileOrganizer') best = 'writer';
        else if (!best) best = 'reader';
      }
    }
    return best;
  }

  getFor(user, id, need) {
    const f = this.files.get(this.resolveId(user, id));
    const role = f && this.access(f, user);
    if (!role) throw notFound(id);
    if (need === 'write' && role === 'reader') throw noPermission();
    if (need === 'owner' && role !== 'owner') throw noPermission();
    if ((need === 'write' || need === 'owner') && !this.appWrites(f, user)) {
      throw driveError(403, 'appNotAuthorizedToFile',
        `The user has not granted the app ${user.grant.clientId} write access to the file ${f.id}.`,
        { location: 'fileId', locationType: 'parameter' });
    }
    return f;
  }

  parentFolder(user, id) {
    const p = this.files.get(this.resolveId(user, id));
    if (!p || !this.access(p, user)) throw driveError(404, 'notFound', `File not found: ${id}.`, { location: 'fileId', locationType: 'parameter' });
    if (p.mimeType !== FOLDER) throw driveError(400, 'invalid', 'The specified parent is not a folder.');
    if (this.access(p, user) === 'reader') throw noPermission();
    return p;
  }

  isAncestor(ancestorId, file) {
    for (let cur = file; cur && cur.parents.length; cur = this.files.get(cur.parents[0])) {
      if (cur.parents[0] === ancestorId) return true;
    }
    return false;
  }

  children(folderId) { return [...this.files.values()].filter((f) => f.parents.includes(folderId)); }

  // meta: Drive file metadata from the client; content: Buffer or null (folders/empty).
  createFile(user, meta, content, opts) {
    meta = meta || {};
    const o = opts || {};
    const t = nowIso();
    const parents = meta.parents === undefined ? [user.rootId] : meta.parents;
    if (!Array.isArray(parents)) throw driveError(400, 'invalid', 'parents must be an array');
    if (parents.length > 1) throw driveError(403, 'cannotAddParent', 'Increasing the number of parents is not allowed.');
    const parentIds = parents.map((p) => this.parentFolder(user, p).id);
    const name = meta.name !== undefined ? String(meta.name) : (o.defaultName || 'Untitled');
    const mimeType = meta.mimeType || o.contentType || (content ? guessMime(name) : guessMime(name));
    const f = {
      id: o.id || newId(), ownerSub: user.sub, name, mimeType, parents: parentIds,
      trashed: false, explicitlyTrashed: false, starred: !!meta.starred,
      description: meta.description, createdTime: meta.createdTime ? normTime(meta.createdTime, 'createdTime') : t,
      modifiedTime: meta.modifiedTime ? normTime(meta.modifiedTime, 'modifiedTime') : t,
      appProperties: cleanProps(meta.appProperties), properties: cleanProps(meta.properties),
      permissions: [], version: 1, originalFilename: meta.originalFilename || name,
      content: mimeType === FOLDER ? null : (content || Buffer.alloc(0)),
      apps: new Set(user.grant ? [user.grant.clientId] : []), // OAuth clients that created it (drive.file)
    };
    if (f.content) f.md5 = md5(f.content);
    if (!meta.createdTime && meta.modifiedTime && f.modifiedTime < f.createdTime) f.createdTime = f.modifiedTime;
    this.files.set(f.id, f);
    if (this.disk && !o.fromDisk) this.disk.onWrite(f);
    this.recordChange(f);
    return f;
  }

  setContent(f, content, modifiedTime) {
    f.content = content;
    f.md5 = md5(content);
    f.modifiedTime = modifiedTime ? normTime(modifiedTime, 'modifiedTime') : nowIso();
    f.version++;
  }

  // PATCH semantics; addParents/removeParents are comma-separated ids.
  updateFile(user, f, meta, addParents, removeParents, content) {
    meta = meta || {};
    if (meta.parents !== undefined) {
      throw driveError(403, 'fieldNotWritable', 'The parents field is not directly writable in update requests. Use the addParents and removeParents parameters instead.');
    }
    for (const k of ['id', 'createdTime', 'size', 'md5Checksum', 'owners', 'kind']) {
      if (meta[k] !== undefined) throw driveError(403, 'fieldNotWritable', `The resource body includes fields which are not directly writable.`);
    }
    const before = { parents: [...f.parents], name: f.name, trashed: f.trashed };
    let parents = [...f.parents];
    for (const id of splitIds(removeParents)) {
      const rid = this.resolveId(user, id);
      if (!parents.includes(rid)) throw driveError(400, 'invalid', `File ${id} is not a parent of ${f.id}.`);
      parents = parents.filter((p) => p !== rid);
    }
    for (const id of splitIds(addParents)) {
      const p = this.parentFolder(user, id);
      if (p.id === f.id || this.isAncestor(f.id, p)) throw driveError(400, 'invalid', 'A folder cannot be moved into itself or one of its descendants.');
      if (!parents.includes(p.id)) parents.push(p.id);
    }
    if (parents.length > 1) throw driveError(403, 'cannotAddParent', 'Increasing the number of parents is not allowed.');
    if (f.isRoot && (meta.name !== undefined || meta.trashed !== undefined || parents.length)) throw noPermission();
    f.parents = parents;
    if (meta.name !== undefined) f.name = String(meta.name);
    if (meta.mimeType !== undefined && f.mimeType !== FOLDER && meta.mimeType !== FOLDER) f.mimeType = meta.mimeType;
    if (meta.description !== undefined) f.description = meta.description;
    if (meta.starred !== undefined) f.starred = !!meta.starred;
    mergeProps(f, 'appProperties', meta.appProperties);
    mergeProps(f, 'properties', meta.properties);
    if (content) this.setContent(f, content, meta.modifiedTime);
    else if (meta.modifiedTime !== undefined) f.modifiedTime = normTime(meta.modifiedTime, 'modifiedTime');
    f.version++;
    if (meta.trashed === true && !f.trashed) this.setTrashed(f, true, true);
    else if (meta.trashed === false && f.trashed) this.setTrashed(f, false, true);
    if (this.disk) this.disk.onWrite(f, before);
    this.recordChange(f);
    return f;
  }

  // Trashing a folder implicitly trashes its subtree; untrash restores only
  // what was implicitly trashed with it.
  setTrashed(f, trashed, explicit) {
    f.trashed = trashed;
    f.explicitlyTrashed = trashed && explicit;
    f.trashedTime = trashed ? nowIso() : undefined;
    if (f.mimeType !== FOLDER) return;
    for (const c of this.children(f.id)) {
      if (trashed && !c.trashed) { this.setTrashed(c, true, false); this.recordChange(c); }
      if (!trashed && c.trashed && !c.explicitlyTrashed) { this.setTrashed(c, false, false); this.recordChange(c); }
    }
  }

  deleteFile(f, opts) {
    if (f.mimeType === FOLDER) for (const c of this.children(f.id)) this.deleteFile(c, opts);
    if (this.disk && !(opts && opts.fromDisk)) this.disk.onDelete(f);
    this.files.delete(f.id);
    this.recordChange(f, true);
  }

  // The API resource for file f as seen by `viewer`.
  resource(f, viewer) {
    const owner = this.users.bySub(f.ownerSub) || { email: 'unknown@example.com', name: 'Unknown', sub: '0' };
    const role = this.access(f, viewer);
    const isFolder = f.mimeType === FOLDER;
    const canWrite = role === 'owner' || role === 'writer';
    const anyone = f.permissions.some((p) => p.type === 'anyone');
    const r = {
      kind: 'drive#file', id: f.id, name: f.name, mimeType: f.mimeType,
      starred: f.starred, trashed: f.trashed, explicitlyTrashed: f.explicitlyTrashed,
      spaces: ['drive'], version: String(f.version),
      webViewLink: isFolder ? `https://drive.google.com/drive/folders/${f.id}` : `https://drive.google.com/file/d/${f.id}/view?usp=drivesdk`,
      iconLink: `https://drive-thirdparty.googleusercontent.com/16/type/${f.mimeType}`,
      hasThumbnail: false, viewedByMe: role === 'owner', createdTime: f.createdTime, modifiedTime: f.modifiedTime,
      owners: [{
        kind: 'drive#user', displayName: owner.name, emailAddress: owner.email, me: owner.sub === viewer.sub,
        permissionId: owner.sub, photoLink: owner.picture,
      }],
      lastModifyingUser: { kind: 'drive#user', displayName: owner.name, emailAddress: owner.email, me: owner.sub === viewer.sub, permissionId: owner.sub },
      shared: f.permissions.length > 0, ownedByMe: role === 'owner', writersCanShare: true,
      permissionIds: [owner.sub, ...f.permissions.map((p) => p.id)],
      capabilities: {
        canAddChildren: isFolder && canWrite && !f.trashed, canEdit: canWrite, canRename: canWrite,
        canDelete: role === 'owner', canTrash: role === 'owner', canUntrash: role === 'owner',
        canDownload: !isFolder, canCopy: !isFolder, canShare: canWrite, canComment: true,
        canListChildren: isFolder, canRemoveChildren: isFolder && canWrite,
        canMoveItemWithinDrive: role === 'owner', canReadRevisions: canWrite,
      },
      quotaBytesUsed: String(f.content ? f.content.length : 0),
    };
    if (viewer.grant) r.isAppAuthorized = !!f.apps && f.apps.has(viewer.grant.clientId);
    if (!f.isRoot) r.parents = role === 'owner' ? [...f.parents] : [];
    if (f.description !== undefined) r.description = f.description;
    if (Object.keys(f.appProperties).length) r.appProperties = { ...f.appProperties };
    if (Object.keys(f.properties).length) r.properties = { ...f.properties };
    if (f.trashed) r.trashedTime = f.trashedTime;
    if (!isFolder) {
      const ext = path.extname(f.name).slice(1);
      Object.assign(r, {
        size: String(f.content.length), md5Checksum: f.md5, originalFilename: f.originalFilename,
        headRevisionId: `0B${f.id.slice(1, 20)}${f.version}`,
        webContentLink: `https://drive.google.com/uc?id=${f.id}&export=download`,
      });
      if (ext) { r.fileExtension = ext; r.fullFileExtension = ext; }
    }
    if (anyone) r.linkShareMetadata = { securityUpdateEligible: false, securityUpdateEnabled: true };
    return r;
  }

  // The view q is evaluated against.
  queryView(f, user) {
    const owner = this.users.bySub(f.ownerSub);
    const parents = [...f.parents];
    if (parents.includes(user.rootId)) parents.push('root');
    return { ...f, parents, ownerEmail: owner && owner.email, sharedWith: f.permissions.map((p) => p.emailAddress).filter(Boolean) };
  }
}

function cleanProps(m) {
  const out = {};
  if (!m) return out;
  if (typeof m !== 'object') throw driveError(400, 'invalid', 'properties must be an object');
  for (const [k, v] of Object.entries(m)) {
    if (v === null) continue;
    if (Buffer.byteLength(k) + Buffer.byteLength(String(v)) > 124) {
      throw driveError(400, 'invalid', `The size of the property ${k} exceeds the 124 bytes limit.`);
    }
    out[k] = String(v);
  }
  return out;
}

function mergeProps(f, field, m) {
  if (m === undefined) return;
  if (m === null) { f[field] = {}; return; }
  for (const [k, v] of Object.entries(m)) {
    if (v === null) delete f[field][k];
    else Object.assign(f[field], cleanProps({ [k]: v }));
  }
  if (Object.keys(f[field]).length > 100) throw driveError(400, 'invalid', 'Too many properties.');
}

function splitIds(s) { return s ? String(s).split(',').map((x) => x.trim()).filter(Boolean) : []; }

module.exports = {
  DriveStore, driveError, invalidParam, notFound, noPermission, FOLDER, KNOWN_FILE_FIELDS, ORDER_KEYS,
  RESUMABLE_CHUNK, guessMime, md5, newId, nowIso, normTime,
  // re-exports used by google-drive-routes.js
  compileQuery, QueryError, parseFields, applyFields, FieldsError, readBody, readJson, sendJson, HttpError,
};

"""TaskPGM's figure: the pairwise potentials as heatmaps, the unary utility, and the task graph."""

import math
import os
import re

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial import distance

from experiments.reporting import figures


def short(task: str) -> str:
  task = str(task).replace('rephrase/bbh/', 'reph/').replace('mislabeled/bbh/', 'mislab/').replace(
      'skewed/bbh/', 'skew/')
  return re.sub(r'^variant(\d+)/bbh/', r'v\1/', task).replace('bbh/', '')


def cluster_order(jsd_NxN) -> np.ndarray:
  """Tasks in the leaf order of average-linkage clustering on JSD, so clusters read as blocks."""
  d = np.asarray(jsd_NxN, np.float64)
  if len(d) < 3:
    return np.arange(len(d))
  d = np.clip((d + d.T) / 2, 0, None)
  np.fill_diagonal(d, 0)
  link = hierarchy.linkage(distance.squareform(d, checks=False), 'average')
  return hierarchy.leaves_list(hierarchy.optimal_leaf_ordering(link, distance.squareform(
      d, checks=False)))


def potentials_heatmap(pots, out_prefix: str) -> list[str]:
  """TaskPGM's pairwise potentials (JSD, PMI) as heatmaps with task names, and the unary utility as
  bars on the same rows, so a task's row reads across those panels; then the task graph. Tasks are
  ordered by clustering their JSD (cluster_order)."""
  order = cluster_order(pots['jsd'])
  pots = {k: (np.asarray(pots[k])[order][:, order] if k in ('jsd', 'pmi') else
              np.asarray(pots[k])[order]) for k in ('tasks', 'unary', 'jsd', 'pmi')}
  tasks, n = [short(t) for t in pots['tasks']], len(pots['tasks'])
  side = max(2.5, 0.32 * n)  # inches per heatmap; the rest is tick labels, colorbars, titles
  fig, axes = figures.plt().subplots(1, 4, figsize=(3.45 * side + 4.2, side + 2.4),
                                     layout='constrained',
                                     gridspec_kw={'width_ratios': [1, 1, 0.45, 1]})
  for ax, key, title in ((axes[0], 'jsd', 'Jensen-Shannon divergence (low = redundant)'),
                         (axes[1], 'pmi', 'PMI (high = related)')):
    # aspect='auto': every panel fills the row's height, so the unary bars line up with the rows.
    im = ax.imshow(np.asarray(pots[key], float), cmap='viridis', aspect='auto')
    ax.set_xticks(range(n), tasks, rotation=60, ha='right', fontsize=8)
    ax.set_yticks(range(n), tasks if key == 'jsd' else [''] * n, fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
  unary = np.asarray(pots['unary'], float)
  axes[2].barh(range(n), unary, color=np.where(unary >= 0, 'tab:blue', 'tab:red'))
  axes[2].set(ylim=(n - 0.5, -0.5), xlabel='unary utility')  # the heatmaps' row order
  axes[2].set_title('unary utility', fontsize=10)
  axes[2].set_yticks(range(n), [''] * n)
  axes[2].axvline(0, color='k', lw=0.5)
  _task_graph(axes[3], pots, tasks)
  fig.suptitle('TaskPGM potentials')
  return figures.save(fig, out_prefix)


def _task_graph(ax, pots, tasks):
  """Tasks on a circle, sized and coloured by utility; edges join the N most redundant pairs."""
  n = len(tasks)
  angle = 2 * np.pi * np.arange(n) / n
  xy_Nx2 = np.stack([np.cos(angle), np.sin(angle)], 1)
  redundancy = 1 - np.asarray(pots['jsd'], float) / math.log(2)
  pairs = sorted(((redundancy[i, j], i, j) for i in range(n) for j in range(i + 1, n)),
                 reverse=True)[:n]
  for r, i, j in pairs:
    ax.plot(*xy_Nx2[[i, j]].T, color='tab:red', alpha=float(np.clip(r, 0.2, 1)), lw=1.5)
  u = np.asarray(pots['unary'], float)
  ax.scatter(*xy_Nx2.T, s=120 + 600 * (u - u.min()) / max(np.ptp(u), 1e-9), c=u, cmap='coolwarm',
             zorder=3, edgecolors='k', linewidths=0.5)
  for (x, y), name in zip(xy_Nx2, tasks):
    ax.annotate(name, (x, y), fontsize=7, ha='center', va='bottom', xytext=(0, 9),
                textcoords='offset points')
  ax.set_title('task graph: node = utility, edge = most redundant pairs (JSD)', fontsize=10)
  ax.set_xlim(-1.4, 1.4)
  ax.set_ylim(-1.3, 1.4)
  ax.axis('off')


def write_for(workdir: str, out_prefix: str | None = None) -> list[str]:
  """potentials.png|svg of a TaskPGM workdir's potentials.npz (beside it, or at out_prefix)."""
  with np.load(os.path.join(workdir, 'potentials.npz')) as pots:
    return potentials_heatmap(dict(pots), out_prefix or os.path.join(workdir, 'potentials'))

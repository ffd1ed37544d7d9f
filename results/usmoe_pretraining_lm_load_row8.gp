set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row8.png.tmp.22593'
$m << EOD
0.130778 0.108236 0.163656 0.0941569 0.114665 0.105957 0.179932 0.10262
0.11084 0.174072 0.123698 0.166992 0.135742 0.0972493 0.0821126 0.109294
EOD
set title "USMoE per sequence (authors' training-free code), k=1.5:\nload (last epoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle

set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row9.png.tmp.22593'
$m << EOD
0.140747 0.0977783 0.0999146 0.153564 0.138733 0.112671 0.151672 0.104919
0.144348 0.133972 0.103638 0.140869 0.130188 0.115051 0.0911255 0.140808
EOD
set title "USMoE per sequence (authors' training-free code), k=2: load\n(last epoch, first seed)"
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

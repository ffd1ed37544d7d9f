set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_vision_load_row4.png.tmp.15986'
$m << EOD
0.121691 0.118244 0.0790441 0.0826746 0.181664 0.202436 0.0942096 0.120037
0.141268 0.103722 0.0636949 0.0900735 0.197564 0.144347 0.163465 0.095864
EOD
set title "USMoE, k=1: load (last epoch, first seed)"
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
